package app_test

import (
	"testing"
	"time"

	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
)

// The queen keeps what heartbeats say of each GPU and serves it on
// GET /v1/hives/<id>/gpu-history to keys with the read scope, like the
// other hive routes; an unknown hive is a 404 in the JSON error shape.
func TestGPUHistoryRoute(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for heartbeats")
	}
	t.Setenv("RBEE_NVIDIA_SMI", recordedSMI(t)) // read when the hive starts
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.AdminKey = testAdminKey })
	mustHive(t, base, ns.ClientURL(), "h1")
	admin := map[string]string{"Authorization": "Bearer " + testAdminKey}
	mk := func(scope string) map[string]string {
		var k api.Key
		if code := doHeaders(t, "POST", base+"/v1/keys", api.KeyRequest{Name: scope, Scopes: []string{scope}}, admin, &k); code != 201 {
			t.Fatalf("create key: %d", code)
		}
		return map[string]string{"Authorization": "Bearer " + k.Key}
	}

	var h api.GPUHistoryList
	waitFor(t, 10*time.Second, func() bool {
		h = api.GPUHistoryList{}
		return doHeaders(t, "GET", base+"/v1/hives/h1/gpu-history", nil, admin, &h) == 200 && len(h.GPUs) == 1 && len(h.GPUs[0].Samples) >= 3
	})
	g := h.GPUs[0]
	s := g.Samples[len(g.Samples)-1]
	if h.Hive != "h1" || h.WindowS != 900 || g.Index != 0 || g.Name != "NVIDIA GeForce RTX 4090" ||
		s.UtilPercent != 97 || s.MemUsedBytes != 18932<<20 || s.MemTotalBytes != 24564<<20 || s.TemperatureC != 71 || s.PowerWatts != 412.37 {
		t.Fatalf("history %+v, last sample %+v", h, s)
	}
	for i := 1; i < len(g.Samples); i++ {
		if !g.Samples[i].Time.After(g.Samples[i-1].Time) {
			t.Fatalf("samples out of order: %+v", g.Samples)
		}
	}

	if code := doHeaders(t, "GET", base+"/v1/hives/h1/gpu-history", nil, mk(api.ScopeRead), nil); code != 200 {
		t.Errorf("read key: %d", code)
	}
	if code := doHeaders(t, "GET", base+"/v1/hives/h1/gpu-history", nil, mk(api.ScopeInfer), nil); code != 403 {
		t.Errorf("infer key: %d, want 403", code)
	}
	if code := doHeaders(t, "GET", base+"/v1/hives/h1/gpu-history", nil, nil, nil); code != 401 {
		t.Errorf("no key: %d, want 401", code)
	}
	var e api.ErrorBody
	if code := doHeaders(t, "GET", base+"/v1/hives/nope/gpu-history", nil, admin, &e); code != 404 || e.Error.Code != api.CodeNotFound || e.Error.Message == "" {
		t.Errorf("unknown hive: %d %+v", code, e)
	}
}
