// onnx.proto is vendored from the onnx wheel; protox compiles it without protoc.
fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"]).expect("compile proto/onnx.proto");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("generate ONNX protobuf types");
}
