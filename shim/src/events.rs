//! Task events published to containerd (`/tasks/create`, `/tasks/exit`, ...). A failed
//! publish is logged, never fatal: containerd also learns the state through the API.

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;

pub use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};

pub struct Events {
    publisher: RemotePublisher,
    namespace: String,
}

impl Events {
    pub fn new(publisher: RemotePublisher, namespace: &str) -> Events {
        Events {
            publisher,
            namespace: namespace.to_string(),
        }
    }

    fn send(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, event)
        {
            tracing::warn!("publishing {topic}: {e}");
        }
    }

    pub fn create(&self, e: TaskCreate) {
        self.send(topics::TASK_CREATE_EVENT_TOPIC, Box::new(e))
    }
    pub fn start(&self, e: TaskStart) {
        self.send(topics::TASK_START_EVENT_TOPIC, Box::new(e))
    }
    pub fn exit(&self, e: TaskExit) {
        self.send(topics::TASK_EXIT_EVENT_TOPIC, Box::new(e))
    }
    pub fn delete(&self, e: TaskDelete) {
        self.send(topics::TASK_DELETE_EVENT_TOPIC, Box::new(e))
    }
    pub fn exec_added(&self, e: TaskExecAdded) {
        self.send(topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(e))
    }
    pub fn exec_started(&self, e: TaskExecStarted) {
        self.send(topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(e))
    }
    pub fn paused(&self, e: TaskPaused) {
        self.send(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(e))
    }
    pub fn resumed(&self, e: TaskResumed) {
        self.send(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(e))
    }
    pub fn oom(&self, e: TaskOOM) {
        self.send(topics::TASK_OOM_EVENT_TOPIC, Box::new(e))
    }
}
