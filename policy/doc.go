// Package policy runs fail-closed WebAssembly policies that decide whether a
// connection may connect, subscribe or publish.
//
// An Engine loads policy modules (.wasm) from a directory, compiles each once
// with wazero, keeps a small pool of instances per module and asks the chain
// of policies that applies to a request's tenant and action, in order; the
// first deny wins. Modules speak a small, versioned ABI (see abi.go and
// docs/POLICY.md): the host writes a Protobuf pb.PolicyRequest into guest
// memory through the guest's allocator and reads back allow, or deny with a
// reason code and an optional message.
//
// Anything that goes wrong is a deny ("fail-closed"): a trap, a call that runs
// past its time budget, memory growth past the page limit, a missing or
// mistyped export, a bad return value, a module that fails to compile or
// instantiate. Each is counted by reason in arqon_policy_fail_closed_total.
//
// Directory layout, ordered by file name within each group:
//
//	DIR/*.wasm                    every tenant, first
//	DIR/tenants/<tenant>/*.wasm   that tenant, after the global ones
//
// The directory is polled (Config.ReloadInterval) and Engine.Reload forces a
// scan: a changed file is compiled, validated and swapped in atomically; a
// broken replacement leaves the previous version in force and is reported; a
// deleted file removes its policy.
//
// The path of one decision:
//
//	Decide(ctx, req)
//	  snapshot (atomic load) -> chain for (tenant, action); empty -> Config.Default
//	  for each module in the chain:
//	    take an idle instance from the module's pool (or instantiate one, up to PoolSize)
//	    marshal req straight into guest memory (MarshalToSizedBufferVT on the memory view)
//	    arqon_decide(ptr, len) under the per-call budget (a reusable timer closes the
//	      call's context; wazero's WithCloseOnContextDone stops the guest)
//	    allow -> next module; deny -> return it; failure -> discard the instance, deny
//	    return the instance to the pool
//
// Lock order: Engine.reloadMu, then module.mu. The decision path takes no
// lock except module.mu when it has to create an instance.
package policy
