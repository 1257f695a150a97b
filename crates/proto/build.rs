//! Compiles `proto/` with protox (pure Rust: no `protoc` binary needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/serviceradar/agent/v1/gateway.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
