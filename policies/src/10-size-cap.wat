;; 10-size-cap: deny publishes whose payload is larger than 64 KiB.
;;
;; ArqonBus policy ABI v1 (docs/POLICY.md). Needs no payload bytes: the host
;; always fills PolicyRequest.payload_size, so the gateway may omit the
;; payload itself for this policy. Deny reason 4 = LIMIT_EXCEEDED.
(module
  (memory (export "memory") 1)

  ;; Memory layout: [16, 64) the length-prefixed deny message;
  ;; [1024, ...) the request buffer.
  (data (i32.const 16) "\1b\00\00\00payload exceeds 65536 bytes")

  (func (export "arqon_policy_abi_version") (result i32) (i32.const 1))
  (func (export "arqon_needs_payload") (result i32) (i32.const 0))
  ;; Bit (1 << action): 8 = PUBLISH only.
  (func (export "arqon_actions") (result i32) (i32.const 8))

  ;; arqon_decide returns 0 (allow) or (message pointer << 32 | reason).
  (func (export "arqon_decide") (param $ptr i32) (param $len i32) (result i64)
    (call $parse (local.get $ptr) (local.get $len))
    (if (i32.or
          (i64.gt_u (global.get $pay_size) (i64.const 65536))
          (i32.gt_u (global.get $pay_len) (i32.const 65536)))
      (then (return (i64.const 0x0000001000000004))))
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
