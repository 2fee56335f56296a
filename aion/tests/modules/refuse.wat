;; Refuses every task.
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"refuse\": \"it mentions a production credential\"}")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 49))))
