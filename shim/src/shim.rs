//! The shim's life as containerd drives it: `start` (spawn the serving shim, print its
//! address), serve the task service until Shutdown, and `delete` (clean up after a shim
//! that died, from the bundle alone).

use std::path::PathBuf;
use std::sync::Arc;

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, ExitSignal, Flags, StartOpts};

use crate::events::Events;
use crate::process::timestamp;
use crate::service::{runtime_for, Service};

pub const RUNTIME_ID: &str = "io.containerd.hull.v2";

pub struct HullShim {
    exit: Arc<ExitSignal>,
    id: String,
    namespace: String,
    bundle: PathBuf,
}

impl containerd_shim::Shim for HullShim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        HullShim {
            exit: Arc::new(ExitSignal::default()),
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            bundle,
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> Result<String, containerd_shim::Error> {
        let grouping = opts.id.clone();
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> Result<DeleteResponse, containerd_shim::Error> {
        if let Err(e) = runtime_for(&self.bundle).delete(&self.id, true) {
            tracing::warn!("cleaning up container {}: {e}", self.id);
        }
        crate::rootfs::unmount(&self.bundle.join("rootfs"));
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: containerd_shim::protos::protobuf::MessageField::some(timestamp(
                std::time::SystemTime::now(),
            )),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Service {
        let svc = Service::new(Events::new(publisher, &self.namespace), self.exit.clone());
        if let Err(e) = crate::exits::spawn_monitor(svc.clone()) {
            tracing::error!("{e}");
        }
        svc
    }
}
