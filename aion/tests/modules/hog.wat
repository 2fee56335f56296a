;; Asks for 64 MiB more memory than any limit here allows.
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i64)
    (drop (memory.grow (i32.const 1024)))
    (i64.const 0)))
