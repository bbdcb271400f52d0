//! Shifting a rootfs's ownership into a partition's user-namespace id range.
