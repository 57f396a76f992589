package mesh

import (
	"reflect"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The fixtures below follow the istio-discovery chart of the pinned release
// (templates/mutatingwebhook.yaml and revision-tags-mwc.yaml): the same webhook names,
// labels and selectors. test/envtest renders the real chart with the real helm.

func sel(reqs ...metav1.LabelSelectorRequirement) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: reqs}
}

func in(key string, values ...string) metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{Key: key, Operator: metav1.LabelSelectorOpIn, Values: values}
}

func notIn(key string, values ...string) metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{Key: key, Operator: metav1.LabelSelectorOpNotIn, Values: values}
}

func absent(key string) metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{Key: key, Operator: metav1.LabelSelectorOpDoesNotExist}
}

func hook(prefix, istiod, ns string, nsSel, objSel *metav1.LabelSelector) admissionregistrationv1.MutatingWebhook {
	return admissionregistrationv1.MutatingWebhook{
		Name:         prefix + "sidecar-injector.istio.io",
		ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Name: istiod, Namespace: ns}},
		Rules: []admissionregistrationv1.RuleWithOperations{{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
		}},
		NamespaceSelector: nsSel,
		ObjectSelector:    objSel,
	}
}

// injectorConfig is the chart's MutatingWebhookConfiguration for revision rev ("" is the
// default revision) or, with tag set, for tag pointing to rev.
func injectorConfig(rev, tag, ns string) admissionregistrationv1.MutatingWebhookConfiguration {
	label := rev
	if label == "" {
		label = DefaultRevision
	}
	istiod := "istiod"
	if rev != "" {
		istiod += "-" + rev
	}
	name := "istio-sidecar-injector"
	if rev != "" {
		name += "-" + rev
	}
	selects := label
	if tag != "" {
		name, selects = "istio-revision-tag-"+tag, tag
	}
	if ns != DefaultNamespace {
		name += "-" + ns
	}
	cfg := admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{LabelRev: label}}}
	if tag != "" {
		cfg.Labels[LabelTag] = tag
	}
	cfg.Webhooks = []admissionregistrationv1.MutatingWebhook{
		hook("rev.namespace.", istiod, ns, sel(in(LabelRev, selects), absent(LabelInjection)), sel(notIn(LabelSidecarInject, "false"))),
		hook("rev.object.", istiod, ns, sel(absent(LabelRev), absent(LabelInjection)), sel(notIn(LabelSidecarInject, "false"), in(LabelRev, selects))),
	}
	if selects == DefaultRevision {
		cfg.Webhooks = append(cfg.Webhooks,
			hook("namespace.", istiod, ns, sel(in(LabelInjection, "enabled")), sel(notIn(LabelSidecarInject, "false"))),
			hook("object.", istiod, ns, sel(absent(LabelInjection), absent(LabelRev)), sel(in(LabelSidecarInject, "true"), absent(LabelRev))))
	}
	return cfg
}

func configMaps(rev, ns, values, meshYAML string) []corev1.ConfigMap {
	suffix := ""
	if rev != "" {
		suffix = "-" + rev
	}
	return []corev1.ConfigMap{
		{ObjectMeta: metav1.ObjectMeta{Name: "istio-sidecar-injector" + suffix, Namespace: ns}, Data: map[string]string{"values": values}},
		{ObjectMeta: metav1.ObjectMeta{Name: "istio" + suffix, Namespace: ns}, Data: map[string]string{"mesh": meshYAML}},
	}
}

// twoRevisions is the cluster: stable (a private hub, 1.28.2-distroless), canary
// (1.29.1), tag prod-stable -> stable.
func twoRevisions() Objects {
	o := Objects{Webhooks: []admissionregistrationv1.MutatingWebhookConfiguration{
		injectorConfig("stable", "", DefaultNamespace),
		injectorConfig("canary", "", DefaultNamespace),
		injectorConfig("stable", "prod-stable", DefaultNamespace),
	}}
	o.ConfigMaps = append(o.ConfigMaps, configMaps("stable", DefaultNamespace,
		`{"revision":"stable","global":{"hub":"registry.example.com/mirror/istio","tag":"1.28.2","variant":"distroless","istioNamespace":"istio-system","proxy":{"image":"proxyv2","resources":{"requests":{"cpu":"50m","memory":"64Mi"},"limits":{"cpu":"1","memory":"512Mi"}}},"imagePullPolicy":"Always","multiCluster":{"clusterName":"east"},"meshID":"mesh-a"}}`,
		"trustDomain: corp.example\ndefaultConfig:\n  discoveryAddress: istiod-stable.istio-system.svc:15012\n  image:\n    imageType: distroless\n  proxyMetadata:\n    DNS_AGENT: \"\"\n")...)
	o.ConfigMaps = append(o.ConfigMaps, configMaps("canary", DefaultNamespace,
		`{"revision":"canary","global":{"hub":"docker.io/istio","tag":"1.29.1","istioNamespace":"istio-system","proxy":{"image":"proxyv2"}}}`,
		"defaultConfig:\n  discoveryAddress: istiod-canary.istio-system.svc:15012\n")...)
	return o
}

func TestSelect(t *testing.T) {
	withDefault := twoRevisions()
	withDefault.Webhooks = append(withDefault.Webhooks, injectorConfig("canary", "default", DefaultNamespace))
	unrevisioned := Objects{Webhooks: []admissionregistrationv1.MutatingWebhookConfiguration{injectorConfig("", "", DefaultNamespace)}}
	unrevisioned.ConfigMaps = configMaps("", DefaultNamespace, `{"revision":"","global":{"hub":"docker.io/istio","tag":"1.29.1"}}`, "")
	otherNS := Objects{Namespace: "mesh", Webhooks: []admissionregistrationv1.MutatingWebhookConfiguration{
		injectorConfig("blue", "", "mesh"), injectorConfig("green", "", DefaultNamespace)}}
	otherNS.ConfigMaps = configMaps("blue", "mesh", `{"revision":"blue","global":{"hub":"h","tag":"1.29.0"}}`, "")

	for _, tc := range []struct {
		name     string
		objects  Objects
		ns, pod  map[string]string
		want     string // Serving.Name(), "" for none
		wantDflt bool
	}{
		{"namespace names the tag", twoRevisions(), map[string]string{LabelRev: "prod-stable"}, nil, "stable (tag prod-stable)", false},
		{"namespace names the revision", twoRevisions(), map[string]string{LabelRev: "canary"}, nil, "canary", false},
		{"pod names the revision", twoRevisions(), nil, map[string]string{LabelRev: "canary"}, "canary", false},
		{"pod's inject=false is disregarded", twoRevisions(), map[string]string{LabelRev: "canary"}, map[string]string{LabelSidecarInject: "false"}, "canary", false},
		{"namespace wins over pod", twoRevisions(), map[string]string{LabelRev: "canary"}, map[string]string{LabelRev: "stable"}, "canary", false},
		{"no label and no default revision", twoRevisions(), nil, nil, "", false},
		{"unknown revision", twoRevisions(), map[string]string{LabelRev: "gone"}, nil, "", false},
		{"istio-injection=enabled without a default", twoRevisions(), map[string]string{LabelInjection: "enabled"}, nil, "", false},
		{"istio-injection=enabled selects the default tag", withDefault, map[string]string{LabelInjection: "enabled"}, nil, "canary (tag default)", false},
		{"unlabelled namespace takes the default tag", withDefault, nil, nil, "canary (tag default)", true},
		{"unrevisioned: istio-injection=enabled", unrevisioned, map[string]string{LabelInjection: "enabled"}, nil, "default", false},
		{"unrevisioned: istio.io/rev=default", unrevisioned, map[string]string{LabelRev: "default"}, nil, "default", false},
		{"unrevisioned: pod opts in", unrevisioned, nil, map[string]string{LabelSidecarInject: "true"}, "default", false},
		{"istio-injection=disabled overrides the revision label", withDefault, map[string]string{LabelInjection: "disabled", LabelRev: "canary"}, nil, "canary (tag default)", true},
		{"another namespace's Istio is another mesh", otherNS, map[string]string{LabelRev: "green"}, nil, "", false},
		{"Istio in a configured namespace", otherNS, map[string]string{LabelRev: "blue"}, nil, "blue", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, ok := New(tc.objects).Select(tc.ns, tc.pod)
			got := ""
			if ok {
				got = s.Name()
			}
			if got != tc.want || (ok && s.Default != tc.wantDflt) {
				t.Fatalf("Select = %q (default %v, by %q), want %q (default %v)", got, s.Default, s.By, tc.want, tc.wantDflt)
			}
		})
	}
}

func TestProxy(t *testing.T) {
	m := New(twoRevisions())
	s, ok := m.Select(map[string]string{LabelRev: "prod-stable"}, nil)
	if !ok {
		t.Fatal("prod-stable selects nothing")
	}
	p := s.Revision.Proxy(m.Namespace, nil)
	want := Proxy{
		Revision: "stable", Image: "registry.example.com/mirror/istio/proxyv2:1.28.2-distroless", ImageTag: "1.28.2-distroless",
		DiscoveryAddress: "istiod-stable.istio-system.svc:15012", CAAddress: "istiod-stable.istio-system.svc:15012",
		TrustDomain: "corp.example", MeshID: "mesh-a", ClusterID: "east", ImagePullPolicy: corev1.PullAlways,
		ProxyMetadata: map[string]string{"DNS_AGENT": ""},
	}
	res := p.Resources
	p.Resources = nil
	if !equalProxy(p, want) {
		t.Fatalf("Proxy =\n%+v\nwant\n%+v", p, want)
	}
	if res == nil || res.Requests.Cpu().Cmp(resource.MustParse("50m")) != 0 || res.Limits.Memory().Cmp(resource.MustParse("512Mi")) != 0 {
		t.Fatalf("resources = %+v, want the values' global.proxy.resources", res)
	}

	canary := m.Revisions["canary"].Proxy(m.Namespace, nil)
	if canary.Image != "docker.io/istio/proxyv2:1.29.1" || canary.TrustDomain != "" || canary.MeshID != "" || canary.Resources != nil {
		t.Fatalf("canary = %+v: want the image and nothing the values do not set", canary)
	}
}

func equalProxy(a, b Proxy) bool {
	if len(a.ProxyMetadata) != len(b.ProxyMetadata) {
		return false
	}
	for k, v := range a.ProxyMetadata {
		if b.ProxyMetadata[k] != v {
			return false
		}
	}
	a.ProxyMetadata, b.ProxyMetadata = nil, nil
	return reflect.DeepEqual(a, b)
}

// TestProxyImage follows pkg/kube/inject's ProxyImage and the injection template's image line
// case by case; test/istio runs Istio's own ProxyImage on the same values.
func TestProxyImage(t *testing.T) {
	for _, tc := range []struct {
		name      string
		v         Values
		mc        MeshConfig
		ann       map[string]string
		want, tag string
	}{
		{"hub and tag", Values{Hub: "docker.io/istio", Tag: "1.29.1"}, MeshConfig{}, nil, "docker.io/istio/proxyv2:1.29.1", "1.29.1"},
		{"variant", Values{Hub: "h", Tag: "1.29.1", Variant: "distroless"}, MeshConfig{}, nil, "h/proxyv2:1.29.1-distroless", "1.29.1-distroless"},
		{"mesh image type wins over variant", Values{Hub: "h", Tag: "1.29.1", Variant: "distroless"}, MeshConfig{HasImage: true, ImageType: "debug"}, nil, "h/proxyv2:1.29.1-debug", "1.29.1-debug"},
		{"mesh image with no type clears the variant", Values{Hub: "h", Tag: "1.29.1", Variant: "distroless"}, MeshConfig{HasImage: true}, nil, "h/proxyv2:1.29.1", "1.29.1"},
		{"type default strips a known suffix", Values{Hub: "h", Tag: "1.29.1-distroless"}, MeshConfig{HasImage: true, ImageType: "default"}, nil, "h/proxyv2:1.29.1", "1.29.1"},
		{"type replaces a known suffix", Values{Hub: "h", Tag: "1.29.1-debug", Variant: "distroless"}, MeshConfig{}, nil, "h/proxyv2:1.29.1-distroless", "1.29.1-distroless"},
		{"an unknown suffix stays", Values{Hub: "h", Tag: "1.29.1-fips", Variant: "distroless"}, MeshConfig{}, nil, "h/proxyv2:1.29.1-fips-distroless", "1.29.1-fips-distroless"},
		{"proxy image name", Values{Hub: "h", Tag: "1.29.1", ProxyImage: "proxy-custom"}, MeshConfig{}, nil, "h/proxy-custom:1.29.1", "1.29.1"},
		{"proxy image a full reference", Values{Hub: "h", Tag: "1.29.1", ProxyImage: "mirror.example:5000/istio/proxyv2:1.27.3"}, MeshConfig{}, nil, "mirror.example:5000/istio/proxyv2:1.27.3", "1.27.3"},
		{"pod annotation image", Values{Hub: "h", Tag: "1.29.1"}, MeshConfig{}, map[string]string{AnnotationProxyImage: "m/p:1.28.0"}, "m/p:1.28.0", "1.28.0"},
		{"pod annotation image type", Values{Hub: "h", Tag: "1.29.1"}, MeshConfig{}, map[string]string{AnnotationProxyImageType: "distroless"}, "h/proxyv2:1.29.1-distroless", "1.29.1-distroless"},
		{"no hub", Values{Tag: "1.29.1"}, MeshConfig{}, nil, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, tag := ProxyImage(tc.v, tc.mc, tc.ann)
			if got != tc.want || tag != tc.tag {
				t.Fatalf("ProxyImage = %q, %q; want %q, %q", got, tag, tc.want, tc.tag)
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	for _, tc := range []struct {
		name, data, tag, err string
	}{
		{"string tag", `{"global":{"tag":"1.29.1"}}`, "1.29.1", ""},
		{"number tag keeps its literal", `{"global":{"tag":1.30}}`, "1.30", ""},
		{"null tag", `{"global":{"tag":null}}`, "", ""},
		{"not JSON", `global: {}`, "", "not the istiod chart's values"},
		{"empty", ``, "", "empty"},
		{"bad resources", `{"global":{"proxy":{"resources":{"requests":{"cpu":"lots"}}}}}`, "", "global.proxy.resources"},
		{"object tag", `{"global":{"tag":{}}}`, "", "global.tag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ParseValues(tc.data)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || v.Tag != tc.tag {
				t.Fatalf("ParseValues = %+v, %v; want tag %q", v, err, tc.tag)
			}
		})
	}
}

func TestProblemsAndTags(t *testing.T) {
	o := twoRevisions()
	o.ConfigMaps = o.ConfigMaps[2:] // stable's ConfigMaps are gone
	m := New(o)
	if got := m.Tags["prod-stable"]; got != "stable" {
		t.Fatalf("tag prod-stable -> %q, want stable", got)
	}
	stable := m.Revisions["stable"]
	if len(stable.Problems) != 2 || !strings.Contains(stable.Problems[0], "istio-sidecar-injector-stable not found") {
		t.Fatalf("problems = %q, want both ConfigMaps named", stable.Problems)
	}
	p := stable.Proxy(m.Namespace, nil)
	if p.Image != "" || p.DiscoveryAddress != "istiod-stable.istio-system.svc:15012" {
		t.Fatalf("proxy without values = %+v: want no image and istiod-stable's address", p)
	}
	if name, where := m.UnknownRevision(map[string]string{LabelRev: "prod-canary"}, nil); name != "prod-canary" || where != "namespace" {
		t.Fatalf("UnknownRevision = %q, %q", name, where)
	}
	if name, _ := m.UnknownRevision(map[string]string{LabelRev: "prod-stable"}, map[string]string{LabelRev: "nope"}); name != "" {
		t.Fatalf("the namespace's known revision wins over the pod's label, got %q", name)
	}
	if !New(Objects{}).Empty() || m.Empty() {
		t.Fatal("Empty is wrong")
	}
}

func TestCheckSkew(t *testing.T) {
	for _, tc := range []struct {
		proxy, control string
		want           Skew
	}{
		{"1.29.1", "1.29.0", SkewNone},
		{"1.28.2-distroless", "1.29.1", SkewOlder},
		{"1.27.3", "1.29.1", SkewUnsupported},
		{"1.29.1", "1.27.3", SkewUnsupported},
		{"2.0.0", "1.29.1", SkewUnsupported},
	} {
		p, ok1 := ParseRelease(tc.proxy)
		c, ok2 := ParseRelease(tc.control)
		if !ok1 || !ok2 {
			t.Fatalf("ParseRelease(%q, %q) failed", tc.proxy, tc.control)
		}
		if got, why := CheckSkew(p, c); got != tc.want || (got != SkewNone && why == "") {
			t.Errorf("CheckSkew(%s, %s) = %v %q, want %v", tc.proxy, tc.control, got, why, tc.want)
		}
	}
	if _, ok := ParseRelease("latest"); ok {
		t.Error(`ParseRelease("latest") succeeded`)
	}
}
