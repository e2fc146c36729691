//! Generates the Rust code for `proto/cbd/v1` with protox, a pure-Rust protobuf
//! compiler, so that no `protoc` is needed on any machine. Also writes the encoded
//! descriptor set that server reflection serves.

use std::{env, error::Error, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/cbd/v1/types.proto",
    "proto/cbd/v1/breakers.proto",
    "proto/cbd/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;

    // Reflection needs the imports too (google/protobuf/*, google/rpc/status).
    std::fs::write(
        out_dir.join("cbd_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Undecodable messages are INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
