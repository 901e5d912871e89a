;; 20-acl: a subject ACL by role.
;;
;;   - role "reader" may not publish;
;;   - subjects under "admin." (and the subject "admin"), and wildcard patterns
;;     whose first token is "*" or ">" (they could match admin subjects), need
;;     role "admin" to subscribe or publish.
;;
;; ArqonBus policy ABI v1 (docs/POLICY.md). Needs no payload. Deny reason 2 =
;; AUTHORIZATION_DENIED. The checks use whole-word loads instead of byte loops.
(module
  (memory (export "memory") 1)

  ;; Memory layout: [32, 128) length-prefixed deny messages;
  ;; [1024, ...) the request buffer.
  (data (i32.const 32) "\1b\00\00\00role reader may not publish")
  (data (i32.const 64) "\25\00\00\00subjects under admin. need role admin")

  (func (export "arqon_policy_abi_version") (result i32) (i32.const 1))
  (func (export "arqon_needs_payload") (result i32) (i32.const 0))
  ;; Bit (1 << action): 4 | 8 = SUBSCRIBE and PUBLISH.
  (func (export "arqon_actions") (result i32) (i32.const 12))

  ;; $role_is_admin: role == "admin".
  (func $role_is_admin (result i32)
    (if (i32.ne (global.get $role_len) (i32.const 5)) (then (return (i32.const 0))))
    (i32.and
      (i32.eq (i32.load (global.get $role_ptr)) (i32.const 0x696d6461))  ;; "admi"
      (i32.eq (i32.load8_u offset=4 (global.get $role_ptr)) (i32.const 0x6e)))) ;; "n"

  ;; $role_is_reader: role == "reader".
  (func $role_is_reader (result i32)
    (if (i32.ne (global.get $role_len) (i32.const 6)) (then (return (i32.const 0))))
    (i32.and
      (i32.eq (i32.load (global.get $role_ptr)) (i32.const 0x64616572))  ;; "read"
      (i32.eq (i32.load16_u offset=4 (global.get $role_ptr)) (i32.const 0x7265)))) ;; "er"

  ;; $admin_only: the subject is "admin" or under "admin.", or a pattern whose
  ;; first token is "*" or ">" (which could match admin subjects).
  (func $admin_only (result i32)
    (local $s i32) (local $n i32) (local $c i32)
    (local.set $s (global.get $subj_ptr))
    (local.set $n (global.get $subj_len))
    (if (i32.eqz (local.get $n)) (then (return (i32.const 0))))
    (local.set $c (i32.load8_u (local.get $s)))
    (if (i32.or (i32.eq (local.get $c) (i32.const 42)) (i32.eq (local.get $c) (i32.const 62))) ;; '*' '>'
      (then
        (return (i32.or (i32.eq (local.get $n) (i32.const 1))
                        (i32.eq (i32.load8_u offset=1 (local.get $s)) (i32.const 46)))))) ;; '.'
    (if (i32.lt_u (local.get $n) (i32.const 5)) (then (return (i32.const 0))))
    (if (i32.ne (i32.load (local.get $s)) (i32.const 0x696d6461)) (then (return (i32.const 0)))) ;; "admi"
    (if (i32.ne (i32.load8_u offset=4 (local.get $s)) (i32.const 0x6e)) (then (return (i32.const 0)))) ;; "n"
    (i32.or (i32.eq (local.get $n) (i32.const 5))
            (i32.eq (i32.load8_u offset=5 (local.get $s)) (i32.const 46))))

  ;; arqon_decide returns 0 (allow) or (message pointer << 32 | reason).
  (func (export "arqon_decide") (param $ptr i32) (param $len i32) (result i64)
    (call $parse (local.get $ptr) (local.get $len))
    (if (i32.and (i32.eq (global.get $action) (i32.const 3)) (call $role_is_reader))
      (then (return (i64.const 0x0000002000000002))))
    (if (i32.and
          (i32.or (i32.eq (global.get $action) (i32.const 2)) (i32.eq (global.get $action) (i32.const 3)))
          (i32.and (call $admin_only) (i32.eqz (call $role_is_admin))))
      (then (return (i64.const 0x0000004000000002))))
    (i64.const 0))

  ;; ---- PolicyRequest parsing: identical in every example policy ----
  ;;
  ;; Each executed `loop` header costs a round trip to the host (it is where
  ;; wazero checks the time budget), so the field walker is unrolled sixteen
  ;; fields per iteration and varints of one or two bytes take no loop.

  ;; Parsed fields of the request (set by $parse).
  (global $p (mut i32) (i32.const 0))
  (global $action (mut i32) (i32.const 0))
  (global $role_ptr (mut i32) (i32.const 0))
  (global $role_len (mut i32) (i32.const 0))
  (global $subj_ptr (mut i32) (i32.const 0))
  (global $subj_len (mut i32) (i32.const 0))
  (global $pay_ptr (mut i32) (i32.const 0))
  (global $pay_len (mut i32) (i32.const 0))
  (global $pay_size (mut i64) (i64.const 0))

  ;; $varint reads a base-128 varint at $p (trapping past $end) and advances $p.
  (func $varint (param $end i32) (result i64)
    (local $p i32) (local $b i32) (local $v i64) (local $shift i64)
    (local.set $p (global.get $p))
    (if (i32.ge_u (local.get $p) (local.get $end)) (then unreachable))
    (local.set $b (i32.load8_u (local.get $p)))
    (if (i32.lt_u (local.get $b) (i32.const 0x80))
      (then
        (global.set $p (i32.add (local.get $p) (i32.const 1)))
        (return (i64.extend_i32_u (local.get $b)))))
    (if (i32.ge_u (i32.add (local.get $p) (i32.const 1)) (local.get $end)) (then unreachable))
    (local.set $v (i64.extend_i32_u (i32.and (local.get $b) (i32.const 0x7f))))
    (local.set $b (i32.load8_u offset=1 (local.get $p)))
    (if (i32.lt_u (local.get $b) (i32.const 0x80))
      (then
        (global.set $p (i32.add (local.get $p) (i32.const 2)))
        (return (i64.or (local.get $v) (i64.shl (i64.extend_i32_u (local.get $b)) (i64.const 7))))))
    ;; Three bytes or more: the general loop (at most ten bytes).
    (local.set $v (i64.const 0))
    (loop $more
      (if (i32.ge_u (local.get $p) (local.get $end)) (then unreachable))
      (if (i64.ge_u (local.get $shift) (i64.const 70)) (then unreachable))
      (local.set $b (i32.load8_u (local.get $p)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (local.set $v (i64.or (local.get $v)
        (i64.shl (i64.extend_i32_u (i32.and (local.get $b) (i32.const 0x7f))) (local.get $shift))))
      (local.set $shift (i64.add (local.get $shift) (i64.const 7)))
      (br_if $more (i32.and (local.get $b) (i32.const 0x80))))
    (global.set $p (local.get $p))
    (local.get $v))

  ;; $field reads one field at $p and records the ones policies look at:
  ;; 1 action, 4 role, 6 subject, 8 payload, 9 payload_size.
  (func $field (param $end i32)
    (local $tag i32) (local $wt i32) (local $n i32) (local $v i64)
    (local.set $tag (i32.wrap_i64 (call $varint (local.get $end))))
    (local.set $wt (i32.and (local.get $tag) (i32.const 7)))
    (if (i32.eqz (local.get $wt))
      (then
        (local.set $v (call $varint (local.get $end)))
        (if (i32.eq (local.get $tag) (i32.const 8)) (then (global.set $action (i32.wrap_i64 (local.get $v)))))
        (if (i32.eq (local.get $tag) (i32.const 72)) (then (global.set $pay_size (local.get $v))))
        (return)))
    (if (i32.eq (local.get $wt) (i32.const 2))
      (then
        (local.set $v (call $varint (local.get $end)))
        (if (i64.gt_u (local.get $v) (i64.extend_i32_u (i32.sub (local.get $end) (global.get $p))))
          (then unreachable))
        (local.set $n (i32.wrap_i64 (local.get $v)))
        (if (i32.eq (local.get $tag) (i32.const 34))
          (then (global.set $role_ptr (global.get $p)) (global.set $role_len (local.get $n))))
        (if (i32.eq (local.get $tag) (i32.const 50))
          (then (global.set $subj_ptr (global.get $p)) (global.set $subj_len (local.get $n))))
        (if (i32.eq (local.get $tag) (i32.const 66))
          (then (global.set $pay_ptr (global.get $p)) (global.set $pay_len (local.get $n))))
        (global.set $p (i32.add (global.get $p) (local.get $n)))
        (return)))
    (if (i32.eq (local.get $wt) (i32.const 1))
      (then (global.set $p (i32.add (global.get $p) (i32.const 8))) (return)))
    (if (i32.eq (local.get $wt) (i32.const 5))
      (then (global.set $p (i32.add (global.get $p) (i32.const 4))) (return)))
    unreachable)

  ;; $parse walks the PolicyRequest in [ptr, ptr+len), sixteen fields per
  ;; loop iteration, trapping on malformed input.
  (func $parse (param $ptr i32) (param $len i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (global.set $p (local.get $ptr))
    (global.set $action (i32.const 0))
    (global.set $role_len (i32.const 0))
    (global.set $subj_len (i32.const 0))
    (global.set $pay_len (i32.const 0))
    (global.set $pay_size (i64.const 0))
    (block $done
      (loop $fields
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (call $field (local.get $end))
        (br $fields)))
    (if (i32.gt_u (global.get $p) (local.get $end)) (then unreachable)))

  ;; arqon_alloc returns a buffer of at least $size bytes at offset 1024,
  ;; growing memory when needed, 0 if it cannot. 512 bytes of slack past the
  ;; buffer let scans use wide loads without bounds checks.
  (func (export "arqon_alloc") (param $size i32) (result i32)
    (local $pages i32)
    (if (i32.gt_u (local.get $size) (i32.const 0x7fff0000)) (then (return (i32.const 0))))
    (local.set $pages
      (i32.shr_u (i32.add (local.get $size) (i32.const 67071)) (i32.const 16))) ;; 1024 + 512 + 65535
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then (return (i32.const 0))))))
    (i32.const 1024))
  ;; ---- end of PolicyRequest parsing ----
)
