//! Generates the Rust code of `proto/smista/v1` with a vendored `protoc`, so a fresh machine needs
//! nothing but cargo.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // A build script is single-threaded: setting the variable prost-build reads is safe here.
    #[allow(clippy::disallowed_methods)]
    std::env::set_var("PROTOC", protoc);

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files =
        ["common", "contact", "operator", "admin", "appointment"].map(|f| root.join(format!("smista/v1/{f}.proto")));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("smista_v1_descriptor.bin"))
        .compile_protos(&files, &[root])?;
    Ok(())
}
