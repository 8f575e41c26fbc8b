// The binary carries no rpath to libtorch by default; point it at the libtorch that torch-sys
// linked against so `mimic` runs without LD_LIBRARY_PATH.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
