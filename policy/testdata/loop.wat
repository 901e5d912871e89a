;; loop: hostile, arqon_decide never returns.
(module
  (memory (export "memory") 1)
  (func (export "arqon_policy_abi_version") (result i32) (i32.const 1))
  (func (export "arqon_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "arqon_decide") (param i32 i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0)))
