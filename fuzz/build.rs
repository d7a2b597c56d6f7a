//! Links the C++ standard library, which a prebuilt static RocksDB (`ROCKSDB_LIB_DIR` with
//! `ROCKSDB_STATIC`, as `make fuzz` passes when the root build's `librocksdb.a` exists) needs and
//! does not bring; when librocksdb-sys compiles RocksDB itself it links it too.
fn main() {
    println!("cargo:rustc-link-lib=dylib=stdc++");
}
