//! The shim's life as containerd drives it: `start` (spawn the serving shim, or find the
//! one already serving the container's group, and print its address), serve the task
//! service until Shutdown, and `delete` (clean up after a shim that died, from the bundle
//! alone).
//!
//! Grouping: containers whose config.json carries the same group annotation (see
//! [`GROUP_ANNOTATIONS`]; under CRI every container of a pod carries its sandbox id) share
//! one shim process, as with containerd's runc shim: one shim per pod, not per container.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, ExitSignal, Flags, StartOpts};

use crate::events::Events;
use crate::process::timestamp;
use crate::service::{runtime_for, Service};

pub const RUNTIME_ID: &str = "io.containerd.hull.v2";

/// The annotations that name a container's shim group, first match wins: hull's own, the
/// runc shim's (so a client that groups for runc groups for hull), and the CRI sandbox id.
pub const GROUP_ANNOTATIONS: [&str; 3] = [
    "io.containerd.hull.v2.group",
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// The group of the container whose bundle is `bundle`: the first non-empty
/// [`GROUP_ANNOTATIONS`] value, else the container's own `id`. A config.json that cannot be
/// read here gets no group; `Create` reports what is wrong with it.
pub fn group_of(bundle: &Path, id: &str) -> String {
    let config = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let annotations = config.as_ref().and_then(|c| c.get("annotations"));
    GROUP_ANNOTATIONS
        .iter()
        .find_map(|key| {
            let v = annotations?.get(key)?.as_str()?;
            (!v.is_empty()).then(|| v.to_string())
        })
        .unwrap_or_else(|| id.to_string())
}

/// Whether a shim answers on `address` (`unix://PATH`).
fn serving(address: &str) -> bool {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

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
        let grouping = group_of(&self.bundle, &opts.id);
        if grouping != opts.id {
            let address =
                containerd_shim::socket_address(&opts.address, &opts.namespace, &grouping);
            if serving(&address) {
                tracing::info!("container {} joins the shim of group {grouping}", opts.id);
                containerd_shim::util::write_address(&address)?;
                return Ok(address);
            }
        }
        // (A second start racing for the same group finds the socket taken: the spawned
        // process then hands over the serving shim's address and exits.)
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
        // Events go through our own client (events.rs): containerd-shim's publisher
        // would build protobuf descriptors the shim then keeps. Its connection is closed.
        drop(publisher);
        let address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
        let events = Events::connect(&address, &self.namespace);
        let svc = Service::new(events, self.exit.clone());
        if let Err(e) = crate::exits::spawn_monitor(svc.clone()) {
            tracing::error!("{e}");
        }
        svc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hull-shim-group-{}-{}",
            std::process::id(),
            config.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), config).unwrap();
        dir
    }

    #[test]
    fn the_group_is_the_first_group_annotation_else_the_id() {
        let cases = [
            (
                r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
                "pod1",
            ),
            (
                r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1","io.containerd.runc.v2.group":"g"}}"#,
                "g",
            ),
            (
                r#"{"annotations":{"io.containerd.runc.v2.group":"g","io.containerd.hull.v2.group":"h"}}"#,
                "h",
            ),
            (
                r#"{"annotations":{"io.containerd.hull.v2.group":""}}"#,
                "c1",
            ),
            (r#"{"annotations":{"io.containerd.hull.v2.group":7}}"#, "c1"),
            (r#"{"annotations":{"other":"x"}}"#, "c1"),
            (r#"{}"#, "c1"),
            ("not json", "c1"),
        ];
        for (config, want) in cases {
            let dir = bundle_with(config);
            assert_eq!(group_of(&dir, "c1"), want, "{config}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
        assert_eq!(group_of(Path::new("/nonexistent-bundle"), "c2"), "c2");
    }
}
