;; 20-acl: a subject ACL by role.
;;
;;   - role "reader" may not publish;
;;   - subjects under "admin." (and the subject "admin"), and wildcard patterns
;;     whose first token is "*" or ">" (they could match admin subjects), need
;;     role "admin" to subscribe or publish.
;;
;; ArqonBus policy ABI v1 (docs/POLICY.md). Needs no payload. Deny reason 2 =
;; AUTHORIZATION_DENIED.
(module
  (memory (export "memory") 1)

  ;; Memory layout: [16, 256) constants and length-prefixed deny messages;
  ;; [1024, ...) request buffer.
  (data (i32.const 16) "admin")
  (data (i32.const 24) "reader")
  (data (i32.const 32) "\1b\00\00\00role reader may not publish")
  (data (i32.const 64) "\25\00\00\00subjects under admin. need role admin")

  (global $buf i32 (i32.const 1024))

  ;; Parsed fields of the request (set by $parse).
  (global $p (mut i32) (i32.const 0))
  (global $action (mut i32) (i32.const 0))
  (global $role_ptr (mut i32) (i32.const 0))
  (global $role_len (mut i32) (i32.const 0))
  (global $subj_ptr (mut i32) (i32.const 0))
  (global $subj_len (mut i32) (i32.const 0))

  (func (export "arqon_policy_abi_version") (result i32) (i32.const 1))
  (func (export "arqon_needs_payload") (result i32) (i32.const 0))
  ;; Bit (1 << action): 4 | 8 = SUBSCRIBE and PUBLISH.
  (func (export "arqon_actions") (result i32) (i32.const 12))

  ;; arqon_alloc returns a buffer of at least $size bytes at offset 1024,
  ;; growing memory when needed (8 bytes of slack), 0 if it cannot.
  (func (export "arqon_alloc") (param $size i32) (result i32)
    (local $pages i32)
    (local.set $pages
      (i32.shr_u (i32.add (i32.add (global.get $buf) (local.get $size)) (i32.const 65543)) (i32.const 16)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then (return (i32.const 0))))))
    (global.get $buf))

  ;; $varint reads a base-128 varint at $p (trapping past $end) and advances $p.
  (func $varint (param $end i32) (result i64)
    (local $v i64) (local $shift i64) (local $b i32)
    (loop $more
      (if (i32.ge_u (global.get $p) (local.get $end)) (then unreachable))
      (local.set $b (i32.load8_u (global.get $p)))
      (global.set $p (i32.add (global.get $p) (i32.const 1)))
      (local.set $v (i64.or (local.get $v)
        (i64.shl (i64.extend_i32_u (i32.and (local.get $b) (i32.const 0x7f))) (local.get $shift))))
      (local.set $shift (i64.add (local.get $shift) (i64.const 7)))
      (br_if $more (i32.and (local.get $b) (i32.const 0x80))))
    (local.get $v))

  ;; $parse walks the PolicyRequest in [ptr, ptr+len) and records the action
  ;; (field 1), the role (field 4) and the subject (field 6).
  (func $parse (param $ptr i32) (param $len i32)
    (local $end i32) (local $tag i32) (local $n i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (global.set $p (local.get $ptr))
    (block $done
      (loop $field
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (local.set $tag (i32.wrap_i64 (call $varint (local.get $end))))
        (block $next
          (if (i32.eq (local.get $tag) (i32.const 8)) ;; field 1, varint
            (then (global.set $action (i32.wrap_i64 (call $varint (local.get $end)))) (br $next)))
          (if (i32.eq (i32.and (local.get $tag) (i32.const 7)) (i32.const 0))
            (then (drop (call $varint (local.get $end))) (br $next)))
          (if (i32.eq (i32.and (local.get $tag) (i32.const 7)) (i32.const 2))
            (then
              (local.set $n (i32.wrap_i64 (call $varint (local.get $end))))
              (if (i32.eq (local.get $tag) (i32.const 34)) ;; field 4, role
                (then (global.set $role_ptr (global.get $p)) (global.set $role_len (local.get $n))))
              (if (i32.eq (local.get $tag) (i32.const 50)) ;; field 6, subject
                (then (global.set $subj_ptr (global.get $p)) (global.set $subj_len (local.get $n))))
              (global.set $p (i32.add (global.get $p) (local.get $n)))
              (br $next)))
          (if (i32.eq (i32.and (local.get $tag) (i32.const 7)) (i32.const 1))
            (then (global.set $p (i32.add (global.get $p) (i32.const 8))) (br $next)))
          (if (i32.eq (i32.and (local.get $tag) (i32.const 7)) (i32.const 5))
            (then (global.set $p (i32.add (global.get $p) (i32.const 4))) (br $next)))
          unreachable)
        (br $field)))
    (if (i32.gt_u (global.get $p) (local.get $end)) (then unreachable)))

  ;; $eq compares [a, a+alen) with [b, b+blen).
  (func $eq (param $a i32) (param $alen i32) (param $b i32) (param $blen i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $alen) (local.get $blen)) (then (return (i32.const 0))))
    (block $done
      (loop $cmp
        (br_if $done (i32.ge_u (local.get $i) (local.get $alen)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $cmp)))
    (i32.const 1))

  ;; $first_token_len is the length of the subject's first '.'-separated token.
  (func $first_token_len (result i32)
    (local $i i32)
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $i) (global.get $subj_len)))
        (br_if $done (i32.eq (i32.load8_u (i32.add (global.get $subj_ptr) (local.get $i))) (i32.const 46)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (local.get $i))

  ;; $admin_only tells whether the subject (or pattern) may reach admin subjects.
  (func $admin_only (result i32)
    (local $n i32) (local $c i32)
    (local.set $n (call $first_token_len))
    (if (i32.eq (local.get $n) (i32.const 1))
      (then
        (local.set $c (i32.load8_u (global.get $subj_ptr)))
        (return (i32.or (i32.eq (local.get $c) (i32.const 42))     ;; '*'
                        (i32.eq (local.get $c) (i32.const 62)))))) ;; '>'
    (call $eq (global.get $subj_ptr) (local.get $n) (i32.const 16) (i32.const 5)))

  ;; arqon_decide returns 0 (allow) or (message pointer << 32 | code).
  (func (export "arqon_decide") (param $ptr i32) (param $len i32) (result i64)
    (global.set $action (i32.const 0))
    (global.set $role_len (i32.const 0))
    (global.set $subj_len (i32.const 0))
    (call $parse (local.get $ptr) (local.get $len))
    (if (i32.and (i32.eq (global.get $action) (i32.const 3))
                 (call $eq (global.get $role_ptr) (global.get $role_len) (i32.const 24) (i32.const 6)))
      (then (return (i64.const 0x0000002000000002))))
    (if (i32.or (i32.eq (global.get $action) (i32.const 2)) (i32.eq (global.get $action) (i32.const 3)))
      (then
        (if (i32.and (call $admin_only)
                     (i32.eqz (call $eq (global.get $role_ptr) (global.get $role_len) (i32.const 16) (i32.const 5))))
          (then (return (i64.const 0x0000004000000002))))))
    (i64.const 0))
)
