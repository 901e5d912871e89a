;; badsig: hostile, arqon_decide has the wrong signature.
(module
  (memory (export "memory") 1)
  (func (export "arqon_policy_abi_version") (result i32) (i32.const 1))
  (func (export "arqon_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "arqon_decide") (param i32) (result i32) (i32.const 0)))
