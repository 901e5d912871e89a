;; 10-size-cap: deny publishes whose payload is larger than 64 KiB.
;;
;; ArqonBus policy ABI v1 (docs/POLICY.md). Needs no payload bytes: the host
;; always fills PolicyRequest.payload_size, so the gateway may omit the
;; payload itself for this policy. Deny reason 4 = LIMIT_EXCEEDED.
(module
  (memory (export "memory") 1)

  ;; Memory layout: [16, 64) length-prefixed deny message; [1024, ...) request buffer.
  (data (i32.const 16) "\1b\00\00\00payload exceeds 65536 bytes")

  (global $cap i64 (i64.const 65536))
  (global $buf i32 (i32.const 1024))

  ;; Parsed fields of the request (set by $parse).
  (global $p (mut i32) (i32.const 0))
  (global $payload_len (mut i64) (i64.const 0))
  (global $payload_size (mut i64) (i64.const 0))

  (func (export "arqon_policy_abi_version") (result i32) (i32.const 1))
  (func (export "arqon_needs_payload") (result i32) (i32.const 0))
  ;; Bit (1 << action): 8 = PUBLISH only.
  (func (export "arqon_actions") (result i32) (i32.const 8))

  ;; arqon_alloc returns a buffer of at least $size bytes at offset 1024,
  ;; growing memory when needed (8 bytes of slack for wide loads), 0 if it cannot.
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

  ;; $parse walks the PolicyRequest in [ptr, ptr+len) and records fields 8 and 9.
  (func $parse (param $ptr i32) (param $len i32)
    (local $end i32) (local $tag i32) (local $n i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (global.set $p (local.get $ptr))
    (block $done
      (loop $field
        (br_if $done (i32.ge_u (global.get $p) (local.get $end)))
        (local.set $tag (i32.wrap_i64 (call $varint (local.get $end))))
        (block $next
          (if (i32.eq (local.get $tag) (i32.const 72)) ;; field 9, varint
            (then (global.set $payload_size (call $varint (local.get $end))) (br $next)))
          (if (i32.eq (i32.and (local.get $tag) (i32.const 7)) (i32.const 0))
            (then (drop (call $varint (local.get $end))) (br $next)))
          (if (i32.eq (i32.and (local.get $tag) (i32.const 7)) (i32.const 2))
            (then
              (local.set $n (i32.wrap_i64 (call $varint (local.get $end))))
              (if (i32.eq (local.get $tag) (i32.const 66)) ;; field 8, bytes
                (then (global.set $payload_len (i64.extend_i32_u (local.get $n)))))
              (global.set $p (i32.add (global.get $p) (local.get $n)))
              (br $next)))
          (if (i32.eq (i32.and (local.get $tag) (i32.const 7)) (i32.const 1))
            (then (global.set $p (i32.add (global.get $p) (i32.const 8))) (br $next)))
          (if (i32.eq (i32.and (local.get $tag) (i32.const 7)) (i32.const 5))
            (then (global.set $p (i32.add (global.get $p) (i32.const 4))) (br $next)))
          unreachable)
        (br $field)))
    (if (i32.gt_u (global.get $p) (local.get $end)) (then unreachable)))

  ;; arqon_decide returns 0 (allow) or (message pointer << 32 | code).
  (func (export "arqon_decide") (param $ptr i32) (param $len i32) (result i64)
    (global.set $payload_len (i64.const 0))
    (global.set $payload_size (i64.const 0))
    (call $parse (local.get $ptr) (local.get $len))
    (if (i32.or
          (i64.gt_u (global.get $payload_size) (global.get $cap))
          (i64.gt_u (global.get $payload_len) (global.get $cap)))
      (then (return (i64.const 0x0000001000000004))))
    (i64.const 0))
)
