package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
)

func testTenantIsolation(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	mine := e.acquire(areq("iso", "a", dlm.Exclusive))
	// Another tenant's lock of the same name is another lock.
	theirs, _, err := e.engine.Acquire(e.ctx, engine.AcquireRequest{Tenant: "globex", Key: dlm.Key{Namespace: "globex", Name: "iso"}, HolderID: "b"})
	if err != nil || theirs.Token < 1 {
		t.Fatalf("other tenant's acquire = %+v, %v", theirs, err)
	}
	// Foreign lease IDs look exactly like unknown ones.
	for what, call := range map[string]func() error{
		"get":     func() error { _, err := e.engine.Lease(e.ctx, "globex", mine.ID); return err },
		"renew":   func() error { _, err := e.engine.Renew(e.ctx, "globex", mine.ID, 0); return err },
		"release": func() error { _, err := e.engine.Release(e.ctx, "globex", mine.ID); return err },
	} {
		if err := call(); dlm.ErrorCode(err) != dlm.CodeNotFound {
			t.Errorf("%s of a foreign lease: %v, want not_found", what, err)
		}
	}
	e.release(mine)
	_, err = e.engine.Lease(e.ctx, "globex", mine.ID)
	wantCode(t, err, dlm.CodeNotFound) // even once ended
	// A tenant cannot name another tenant's namespace.
	_, _, err = e.engine.Acquire(e.ctx, engine.AcquireRequest{Tenant: "globex", Key: k("iso"), HolderID: "b"})
	wantCode(t, err, dlm.CodePermissionDenied)
	// The global scope is one namespace shared by all tenants.
	g := dlm.Key{Namespace: dlm.GlobalNamespace, Name: "shared/thing"}
	if _, _, err := e.engine.Acquire(e.ctx, engine.AcquireRequest{Tenant: tenant, Key: g, HolderID: "a"}); err != nil {
		t.Fatal(err)
	}
	_, _, err = e.engine.Acquire(e.ctx, engine.AcquireRequest{Tenant: "globex", Key: g, HolderID: "b"})
	wantCode(t, err, dlm.CodeLockConflict)
	locks, _, err := e.engine.List(e.ctx, "globex", "", "", 0)
	if err != nil || len(locks) != 1 || locks[0].Key.Namespace != "globex" {
		t.Errorf("globex lists %+v, %v; want only its own lock", locks, err)
	}
}

func testTenantLimits(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{MaxLeasesPerTenant: 2, MaxWaitersPerTenant: 1})
	a := e.acquire(areq("l/1", "h", dlm.Exclusive))
	e.acquire(areq("l/2", "h", dlm.Exclusive))
	_, _, err := e.engine.Acquire(e.ctx, areq("l/3", "h", dlm.Exclusive))
	wantCode(t, err, dlm.CodeLimitExceeded)
	// Another tenant is not affected.
	if _, _, err := e.engine.Acquire(e.ctx, engine.AcquireRequest{Tenant: "other", Key: dlm.Key{Namespace: "other", Name: "l/3"}, HolderID: "h"}); err != nil {
		t.Errorf("other tenant: %v", err)
	}
	w := areq("l/1", "w", dlm.Exclusive)
	w.Wait = 20 * time.Second
	ch := e.waitFor(e.ctx, w)
	e.waitQueued("l/1", 1)
	w.HolderID = "w2"
	_, _, err = e.engine.Acquire(e.ctx, w)
	wantCode(t, err, dlm.CodeLimitExceeded)
	e.release(a) // frees a lease; the waiter takes it
	if got := <-ch; got.err != nil {
		t.Fatal(got.err)
	}
	_, _, err = e.engine.Acquire(e.ctx, areq("l/3", "h", dlm.Exclusive))
	wantCode(t, err, dlm.CodeLimitExceeded)
}

func testList(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	for i := range 5 {
		e.acquire(areq(fmt.Sprintf("jobs/%d", i), "h", dlm.Shared))
	}
	e.acquire(areq("other", "h", dlm.Shared))
	released := e.acquire(areq("jobs/9", "h", dlm.Shared))
	e.release(released) // no holders: not listed
	var names []string
	cursor := ""
	for pages := 0; ; pages++ {
		locks, next, err := e.engine.List(e.ctx, tenant, "jobs/", cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(locks) > 2 || pages > 5 {
			t.Fatalf("page of %d locks (page %d)", len(locks), pages)
		}
		for _, l := range locks {
			names = append(names, l.Key.Name)
			if len(l.Holders) != 1 {
				t.Errorf("%s listed with %d holders", l.Key.Name, len(l.Holders))
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	want := "[jobs/0 jobs/1 jobs/2 jobs/3 jobs/4]"
	if got := fmt.Sprint(names); got != want {
		t.Errorf("listed %s, want %s", got, want)
	}
	if _, _, err := e.engine.List(e.ctx, tenant, "", "not base64!", 0); err == nil {
		t.Errorf("a garbage cursor was accepted")
	}
}

func testTenantsAndKeys(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	creds, err := e.engine.Bootstrap(e.ctx, "")
	if err != nil || creds == nil || creds.AdminKey == "" || creds.TenantKey == "" {
		t.Fatalf("bootstrap = %+v, %v", creds, err)
	}
	if again, err := e.engine.Bootstrap(e.ctx, ""); err != nil || again != nil {
		t.Errorf("second bootstrap = %+v, %v; want nothing new", again, err)
	}
	p, err := e.engine.Authenticate(e.ctx, creds.AdminKey)
	if err != nil || !p.Admin {
		t.Errorf("admin key: %+v, %v", p, err)
	}
	p, err = e.engine.Authenticate(e.ctx, creds.TenantKey)
	if err != nil || p.Admin || p.Tenant != engine.DefaultTenant {
		t.Errorf("default tenant key: %+v, %v", p, err)
	}
	tn, id, key, err := e.engine.CreateTenant(e.ctx, "globex")
	if err != nil || tn.Name != "globex" || id == "" || key == "" {
		t.Fatalf("create tenant = %+v %q %q, %v", tn, id, key, err)
	}
	if _, _, _, err := e.engine.CreateTenant(e.ctx, "globex"); err == nil {
		t.Errorf("a tenant was created twice")
	}
	if _, _, _, err := e.engine.CreateTenant(e.ctx, "Bad Name"); !errors.Is(err, &dlm.Error{Code: dlm.CodeInvalidArgument}) {
		t.Errorf("bad tenant name: %v", err)
	}
	id2, key2, err := e.engine.CreateKey(e.ctx, "globex")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{key, key2} {
		if p, err := e.engine.Authenticate(e.ctx, k); err != nil || p.Tenant != "globex" {
			t.Errorf("globex key: %+v, %v", p, err)
		}
	}
	if err := e.engine.RevokeKey(e.ctx, "globex", id); err != nil {
		t.Fatal(err)
	}
	_, err = e.engine.Authenticate(e.ctx, key)
	wantCode(t, err, dlm.CodeUnauthenticated)
	if _, err := e.engine.Authenticate(e.ctx, key2); err != nil {
		t.Errorf("the other key stopped working: %v", err)
	}
	wantCode(t, e.engine.RevokeKey(e.ctx, engine.DefaultTenant, id2), dlm.CodeNotFound)
	_, err = e.engine.Authenticate(e.ctx, key[:len(key)-1]+"x")
	wantCode(t, err, dlm.CodeUnauthenticated)
	ts, err := e.engine.Tenants(e.ctx)
	if err != nil || len(ts) != 2 || ts[0].Name != engine.DefaultTenant || ts[1].Name != "globex" {
		t.Errorf("tenants = %+v, %v", ts, err)
	}
}
