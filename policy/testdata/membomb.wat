;; membomb: hostile, arqon_decide grows memory a page at a time until the
;; host refuses, then traps (as a real allocator aborts on out-of-memory).
(module
  (memory (export "memory") 1)
  (func (export "arqon_policy_abi_version") (result i32) (i32.const 1))
  (func (export "arqon_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "arqon_decide") (param i32 i32) (result i64)
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))
