//! A partition's root disk: a sparse file holding an ext4 filesystem, loop-mounted.
