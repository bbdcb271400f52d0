//! Task events published to containerd (`/tasks/create`, `/tasks/exit`, ...). A failed
//! publish is logged, never fatal: containerd also learns the state through the API.

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::protos::ttrpc::Client;
use containerd_shim::protos::EventsClient;

pub use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};

/// containerd's event service, as the shim reaches it.
///
/// containerd-shim's own `RemotePublisher` names each event's type through protobuf
/// reflection, and the first use builds the descriptors of the whole events proto file:
/// 351 KiB of heap (measured with mallinfo2) that a shim then keeps for its container's
/// life. The type URLs are fixed strings (checked against the descriptors in the tests),
/// so the envelope is built here without reflection and sent with the generated client.
pub struct Events {
    /// None when containerd's address was not given or not reachable: events are then
    /// dropped with a log line, as a failed publish is.
    client: Option<EventsClient>,
    namespace: String,
}

/// The `Any` type URL of each event: "containerd.events." and the message name, as the
/// Go shims and containerd-shim's `convert_to_any` write it.
const TYPE_PREFIX: &str = "containerd.events.";

impl Events {
    /// Connects to containerd's ttrpc address (`TTRPC_ADDRESS`, which containerd gives
    /// every shim).
    pub fn connect(address: &str, namespace: &str) -> Events {
        let client = containerd_shim::util::connect(address)
            .map_err(|e| e.to_string())
            .and_then(|fd| Client::new(fd).map_err(|e| e.to_string()));
        let client = match client {
            Ok(c) => Some(EventsClient::new(c)),
            Err(e) => {
                tracing::warn!("connecting to containerd's events at {address:?}: {e}");
                None
            }
        };
        Events {
            client,
            namespace: namespace.to_string(),
        }
    }

    fn send<M: Message>(&self, topic: &str, name: &str, event: &M) {
        let Some(client) = &self.client else {
            tracing::warn!("publishing {topic}: no connection to containerd");
            return;
        };
        let r = envelope(topic, &self.namespace, name, event).and_then(|env| {
            let req = ForwardRequest {
                envelope: MessageField::some(env),
                ..Default::default()
            };
            client
                .forward(Context::default(), &req)
                .map(drop)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = r {
            tracing::warn!("publishing {topic}: {e}");
        }
    }
}

/// One method per event the shim publishes, named like the Go shim's; the message type's
/// name gives the `Any` type URL.
macro_rules! events {
    ($($method:ident: $ty:ident on $topic:ident),* $(,)?) => {
        impl Events {
            $(pub fn $method(&self, e: $ty) {
                self.send(topics::$topic, stringify!($ty), &e)
            })*
        }

        /// (type name used, the name protobuf reflection gives), for the tests.
        #[cfg(test)]
        fn type_names() -> Vec<(String, String)> {
            use containerd_shim::protos::protobuf::MessageFull;
            vec![$((
                format!("{TYPE_PREFIX}{}", stringify!($ty)),
                $ty::descriptor().full_name().to_string(),
            )),*]
        }
    };
}

events! {
    create: TaskCreate on TASK_CREATE_EVENT_TOPIC,
    start: TaskStart on TASK_START_EVENT_TOPIC,
    exit: TaskExit on TASK_EXIT_EVENT_TOPIC,
    delete: TaskDelete on TASK_DELETE_EVENT_TOPIC,
    exec_added: TaskExecAdded on TASK_EXEC_ADDED_EVENT_TOPIC,
    exec_started: TaskExecStarted on TASK_EXEC_STARTED_EVENT_TOPIC,
    paused: TaskPaused on TASK_PAUSED_EVENT_TOPIC,
    resumed: TaskResumed on TASK_RESUMED_EVENT_TOPIC,
    oom: TaskOOM on TASK_OOM_EVENT_TOPIC,
}

/// The envelope containerd's Forward takes: topic, namespace, time, and the event as an
/// `Any` named `containerd.events.<name>`.
fn envelope<M: Message>(
    topic: &str,
    namespace: &str,
    name: &str,
    event: &M,
) -> Result<Envelope, String> {
    let value = event.write_to_bytes().map_err(|e| e.to_string())?;
    Ok(Envelope {
        timestamp: MessageField::some(crate::process::timestamp(std::time::SystemTime::now())),
        namespace: namespace.to_string(),
        topic: topic.to_string(),
        event: MessageField::some(Any {
            type_url: format!("{TYPE_PREFIX}{name}"),
            value,
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_urls_are_the_names_protobuf_gives_the_events() {
        for (ours, reflected) in type_names() {
            assert_eq!(ours, reflected);
        }
    }

    #[test]
    fn the_envelope_carries_the_event_and_decodes_back() {
        let e = TaskStart {
            container_id: "c1".into(),
            pid: 42,
            ..Default::default()
        };
        let env = envelope(topics::TASK_START_EVENT_TOPIC, "ns1", "TaskStart", &e).unwrap();
        assert_eq!(env.topic, "/tasks/start");
        assert_eq!(env.namespace, "ns1");
        assert!(env.timestamp.is_some());
        let any = env.event.as_ref().expect("event");
        assert_eq!(any.type_url, "containerd.events.TaskStart");
        let back = TaskStart::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back, e);
        // What containerd-shim's own publisher would have sent.
        let theirs = containerd_shim::util::convert_to_any(Box::new(e)).unwrap();
        assert_eq!(theirs.type_url, any.type_url);
        assert_eq!(theirs.value, any.value);
    }

    #[test]
    fn without_containerd_events_are_dropped_not_fatal() {
        let ev = Events::connect("/nonexistent/hull-test/containerd.sock.ttrpc", "ns");
        assert!(ev.client.is_none());
        ev.start(TaskStart::default());
    }
}
