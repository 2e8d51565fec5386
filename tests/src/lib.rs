//! Cross-crate integration tests of smista live in `tests/`; this library is empty.
