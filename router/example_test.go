package router_test

import (
	"fmt"
	"slices"

	"github.com/arqonbus/arqonbus/router"
)

func Example() {
	type conn struct{ name string }
	alice, bob := &conn{"alice"}, &conn{"bob"}

	r := router.New[*conn](router.Config{})
	_ = r.Insert("acme", "orders.*.created", alice)
	_ = r.Insert("acme", "orders.>", bob)
	_ = r.Insert("globex", "orders.>", bob) // another tenant: never mixed

	subject := "orders.eu.created"
	if err := router.ValidateSubject(subject); err != nil {
		fmt.Println(err)
		return
	}
	var names []string
	for _, c := range r.Match("acme", subject) { // read-only, shared slice
		names = append(names, c.name)
	}
	slices.Sort(names)
	fmt.Println(names)

	fmt.Println(router.ValidateSubject("orders.*"))
	fmt.Println(r.Insert("acme", "orders.>", bob))
	fmt.Println(r.Remove("acme", "orders.>", bob), r.Count())
	// Output:
	// [alice bob]
	// router: wildcard in publish subject
	// router: subscription exists
	// <nil> 2
}
