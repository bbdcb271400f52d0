//! The shim's errors and how each reaches containerd as a ttrpc status code (containerd
//! turns NotFound, FailedPrecondition, ... back into its `errdefs` errors).

use containerd_shim::protos::ttrpc::{self, Code};

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("container \"{0}\" does not exist")]
    NoContainer(String),
    #[error("process \"{exec_id}\" of container \"{id}\" does not exist")]
    NoProcess { id: String, exec_id: String },
    #[error("process \"{exec_id}\" of container \"{id}\" already exists")]
    ExecExists { id: String, exec_id: String },
    #[error("a shim serves one container: \"{0}\" already exists")]
    ContainerExists(String),
    #[error("process already finished")]
    Finished,
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0} is not implemented by containerd-shim-hull-v2")]
    NotImplemented(&'static str),
    /// Boxed: the runtime's error is large and every shim result carries this type.
    #[error(transparent)]
    Runtime(Box<hull_runtime::container::Error>),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
}

impl From<hull_runtime::container::Error> for ShimError {
    fn from(e: hull_runtime::container::Error) -> Self {
        ShimError::Runtime(Box::new(e))
    }
}

pub type Result<T> = std::result::Result<T, ShimError>;

pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShimError {
    let what = what.into();
    move |source| ShimError::Io { what, source }
}

pub fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> ShimError {
    let what = what.into();
    move |source| ShimError::Sys { what, source }
}

impl ShimError {
    fn code(&self) -> Code {
        use hull_runtime::container::Error as R;
        match self {
            ShimError::NoContainer(_) | ShimError::NoProcess { .. } | ShimError::Finished => {
                Code::NOT_FOUND
            }
            ShimError::ExecExists { .. } | ShimError::ContainerExists(_) => Code::ALREADY_EXISTS,
            ShimError::Precondition(_) => Code::FAILED_PRECONDITION,
            ShimError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ShimError::NotImplemented(_) => Code::UNIMPLEMENTED,
            ShimError::Runtime(e) => match e.as_ref() {
                R::NotRunning => Code::NOT_FOUND,
                R::WrongStatus { .. } => Code::FAILED_PRECONDITION,
                R::Usage(_) | R::Spec(_) => Code::INVALID_ARGUMENT,
                R::State(hull_runtime::state::StateError::NotExist(_)) => Code::NOT_FOUND,
                _ => Code::UNKNOWN,
            },
            ShimError::Io { .. } | ShimError::Sys { .. } => Code::UNKNOWN,
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        tracing::debug!("request failed: {e}");
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_codes_containerd_understands() {
        assert_eq!(ShimError::Finished.code(), Code::NOT_FOUND);
        assert_eq!(
            ShimError::from(hull_runtime::container::Error::NotRunning).code(),
            Code::NOT_FOUND
        );
        assert_eq!(
            ShimError::NotImplemented("checkpoint").code(),
            Code::UNIMPLEMENTED
        );
        assert_eq!(
            ShimError::Precondition("running".into()).code(),
            Code::FAILED_PRECONDITION
        );
        let e: ttrpc::Error = ShimError::NotImplemented("checkpoint").into();
        assert!(
            format!("{e:?}").contains("checkpoint is not implemented"),
            "{e:?}"
        );
    }
}
