;; badalloc: arqon_alloc returns 0 (out of memory) for every size.
(module
  (memory (export "memory") 1)
  (func (export "arqon_policy_abi_version") (result i32) (i32.const 1))
  (func (export "arqon_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "arqon_decide") (param i32 i32) (result i64) (i64.const 0)))
