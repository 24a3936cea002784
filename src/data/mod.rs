//! Fashion-MNIST IDX files: discovery, strict reading, and the seeded train/validation split.
