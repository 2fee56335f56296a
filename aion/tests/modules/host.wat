;; Imports a function of the host that is not WASI.
(module
  (import "env" "read_secrets" (func $s (result i32)))
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i64) (i64.const 0)))
