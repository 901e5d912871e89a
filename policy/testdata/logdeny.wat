;; logdeny: logs through arqon.log and denies with reason code 0 (the host
;; reports POLICY_BLOCKED) and the message "go away".
(module
  (import "arqon" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "arqon_policy_abi_version") (result i32) (i32.const 1))
  (func (export "arqon_alloc") (param i32) (result i32) (i32.const 1024))
  (data (i32.const 16) "hello from logdeny")
  (data (i32.const 64) "\07\00\00\00go away")
  (func (export "arqon_needs_payload") (result i32) (i32.const 0))
  (func (export "arqon_decide") (param i32 i32) (result i64)
    (call $log (i32.const 16) (i32.const 18))
    (i64.const 0x0000004000000000)))
