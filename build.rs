//! Generates the tonic/prost code, the proto3 JSON (pbjson) impls and the
//! reflection descriptor set from `proto/`, with protox: no system protoc.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "commerce/v1/cart.proto",
    "commerce/v1/order.proto",
    "commerce/v1/saga_admin.proto",
    "commerce/v1/admin.proto",
    "payment/v1/payment.proto",
    "inventory/v1/inventory.proto",
    "shipping/v1/shipping.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let file_descriptors = protox::compile(PROTOS, ["proto"])?;

    // Reflection and the REST shim need the full set WITH imports, encoded by
    // protox itself: a round trip through prost-types would drop extension
    // options such as `google.api.http`.
    let with_imports = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?
        .encode_file_descriptor_set();
    fs::write(out_dir.join("descriptor.bin"), &with_imports)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(file_descriptors.clone())?;

    pbjson_build::Builder::new()
        .register_descriptors(&with_imports)?
        .preserve_proto_field_names()
        .build(&[".commerce", ".payment", ".inventory", ".shipping"])?;
    Ok(())
}
