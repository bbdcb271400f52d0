//! End-to-end test support for hull (skeleton: replaced by the harness).
