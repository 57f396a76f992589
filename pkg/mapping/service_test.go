package mapping

import (
	"errors"
	"strings"
	"testing"
)

// TestParseService: what Emissary understands from a Mapping's service string, and which
// namespace it means. Expected errors are Emissary's (pkg/emissaryutil/svc_test.go).
func TestParseService(t *testing.T) {
	type want = ParsedService
	cases := []struct {
		name    string
		in      string
		ns      string // the Mapping's namespace
		want    want
		wantErr string // substring; "" = no error
	}{
		// Kubernetes names and the namespace they mean.
		{name: "bare name means the Mapping's namespace", in: "quote", ns: "default",
			want: want{Host: "quote", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "bare name from another namespace", in: "quote", ns: "ambassador",
			want: want{Host: "quote", Name: "quote", Namespace: "ambassador", InCluster: true}},
		{name: "name.namespace", in: "quote.default", ns: "ambassador",
			want: want{Host: "quote.default", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "name.namespace:port", in: "quote.default:8080", ns: "ambassador",
			want: want{Host: "quote.default", Port: "8080", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "name.namespace.svc", in: "quote.default.svc", ns: "x",
			want: want{Host: "quote.default.svc", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "name.namespace.svc.cluster.local", in: "quote.default.svc.cluster.local", ns: "x",
			want: want{Host: "quote.default.svc.cluster.local", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "name.namespace.svc.cluster.local:8080", in: "quote.default.svc.cluster.local:8080", ns: "x",
			want: want{Host: "quote.default.svc.cluster.local", Port: "8080", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "custom cluster domain", in: "quote.prod.svc.corp.internal", ns: "x",
			want: want{Host: "quote.prod.svc.corp.internal", Name: "quote", Namespace: "prod", InCluster: true}},
		{name: "absolute svc.cluster.local.", in: "quote.default.svc.cluster.local.", ns: "x",
			want: want{Host: "quote.default.svc.cluster.local.", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "absolute name.namespace. skips the DNS search list", in: "quote.default.", ns: "x",
			want: want{Host: "quote.default.", Name: "quote", Namespace: "default"}},
		{name: "bare name with port", in: "quote:8080", ns: "default",
			want: want{Host: "quote", Port: "8080", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "port 0 is written but absent to Emissary", in: "quote:0", ns: "default",
			want: want{Host: "quote", Port: "0", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "empty port", in: "quote:", ns: "default",
			want: want{Host: "quote", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "uppercase names are DNS names", in: "Quote.Default", ns: "x",
			want: want{Host: "Quote.Default", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "leading // is URL-ish", in: "//quote.default:1234", ns: "x",
			want: want{Host: "quote.default", Port: "1234", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "userinfo is ignored", in: "user@quote", ns: "default",
			want: want{Host: "quote", Name: "quote", Namespace: "default", InCluster: true}},

		// Trailing junk: Emissary ignores it (rebuilds the service from host and port).
		{name: "trailing path", in: "quote/foo", ns: "default",
			want: want{Host: "quote", Name: "quote", Namespace: "default", InCluster: true, HasPath: true}},
		{name: "trailing slash after port", in: "quote.default:80/", ns: "x",
			want: want{Host: "quote.default", Port: "80", Name: "quote", Namespace: "default", InCluster: true, HasPath: true}},
		{name: "query", in: "quote?x=1", ns: "default",
			want: want{Host: "quote", Name: "quote", Namespace: "default", InCluster: true, HasPath: true}},
		{name: "fragment", in: "quote#frag", ns: "default",
			want: want{Host: "quote", Name: "quote", Namespace: "default", InCluster: true, HasPath: true}},

		// Schemes.
		{name: "http://", in: "http://quote", ns: "default",
			want: want{Scheme: "http", Host: "quote", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "https:// with namespace and port", in: "https://quote.default:8443", ns: "x",
			want: want{Scheme: "https", Host: "quote.default", Port: "8443", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "HTTP:// is lower-cased", in: "HTTP://quote", ns: "default",
			want: want{Scheme: "http", Host: "quote", Name: "quote", Namespace: "default", InCluster: true}},
		{name: "unknown scheme is kept", in: "ambassador://foo.ns", ns: "x",
			want: want{Scheme: "ambassador", Host: "foo.ns", Name: "foo", Namespace: "ns", InCluster: true}},

		// IP literals: no namespace.
		{name: "IPv4", in: "10.0.0.1", ns: "default", want: want{Host: "10.0.0.1", IsIP: true}},
		{name: "IPv4:port", in: "10.0.0.1:8080", ns: "default", want: want{Host: "10.0.0.1", Port: "8080", IsIP: true}},
		{name: "[IPv6]:port", in: "[fe80::e022:9cff:fecc:c7c4]:8080", ns: "default",
			want: want{Host: "fe80::e022:9cff:fecc:c7c4", Port: "8080", IsIP: true}},
		{name: "[IPv6]", in: "[::1]", ns: "default", want: want{Host: "::1", IsIP: true}},
		{name: "https://[IPv6]:443", in: "https://[fe80::1]:443", ns: "default",
			want: want{Scheme: "https", Host: "fe80::1", Port: "443", IsIP: true}},
		{name: "bare IPv6 is an error in Emissary", in: "fe80::e022:9cff:fecc:c7c4", ns: "default", wantErr: "invalid port"},
		{name: "bare ::1 is an error in Emissary", in: "::1", ns: "default", wantErr: "too many colons"},
		{name: "unbalanced bracket", in: "https://[fe80::1:443", ns: "default", wantErr: "missing ']'"},

		// Names that are not Kubernetes Services.
		{name: "localhost is Emissary's own pod", in: "localhost:8500", ns: "default",
			want: want{Host: "localhost", Port: "8500", IsLocalhost: true}},
		{name: "external FQDN: Emissary's endpoint resolver reads api.example", in: "api.example.com", ns: "default",
			want: want{Host: "api.example.com", Name: "api", Namespace: "example"}},
		{name: "external FQDN with port", in: "api.example.com:443", ns: "default",
			want: want{Host: "api.example.com", Port: "443", Name: "api", Namespace: "example"}},
		{name: "two-label FQDN reads as name.namespace", in: "example.com", ns: "default",
			want: want{Host: "example.com", Name: "example", Namespace: "com", InCluster: true}},
		{name: "unicode host is accepted but is no Service", in: "квота.default", ns: "x",
			want: want{Host: "квота.default", Name: "квота", Namespace: "default"}},
		{name: "underscore is no DNS label", in: "my_svc", ns: "default",
			want: want{Host: "my_svc", Name: "my_svc", Namespace: "default"}},

		// Errors.
		{name: "empty string", in: "", ns: "default", wantErr: "no hostname"},
		{name: "spaces", in: "quote service", ns: "default", wantErr: "invalid character"},
		{name: "leading space", in: " quote", ns: "default", wantErr: "invalid character"},
		{name: "only colons (Emissary's parser takes host \":::\")", in: "::::", ns: "default", wantErr: "neither an IP address nor a DNS name"},
		{name: "five colons", in: ":::::", ns: "default", wantErr: "neither an IP address nor a DNS name"},
		{name: "three colons: Emissary reads host :: (empty port)", in: ":::", ns: "default", want: want{Host: "::", IsIP: true}},
		{name: "scheme only", in: "http://", ns: "default", wantErr: "no hostname"},
		{name: "port only", in: ":80", ns: "default", wantErr: "no hostname"},
		{name: "port not a number", in: "quote:notaport", ns: "default", wantErr: "invalid port"},
		{name: "port out of range", in: "quote:99999", ns: "default", wantErr: "out of range"},
		{name: "negative port", in: "https://bad-service:-1", ns: "default", wantErr: "invalid port"},
		{name: "two ports", in: "bad-service:443:443", ns: "default", wantErr: "too many colons"},
		{name: "empty label", in: "quote..default", ns: "x", wantErr: "empty label"},
		{name: "leading dot", in: ".default", ns: "x", wantErr: "empty label"},
		{name: "absolute single label", in: "quote.", ns: "x", wantErr: "absolute single-label"},
		{name: "bare name, Mapping namespace unknown", in: "quote", ns: "", wantErr: "namespace is unknown",
			want: want{Host: "quote", Name: "quote"}},
		{name: "control character", in: "quote\n", ns: "default", wantErr: "invalid control character"},
	}
	if len(cases) < 35 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseService(tc.in, tc.ns)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseService(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
				}
				if tc.want != (ParsedService{}) && got != tc.want {
					t.Fatalf("ParseService(%q) = %+v, want %+v", tc.in, got, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseService(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("ParseService(%q, %q)\n got %+v\nwant %+v", tc.in, tc.ns, got, tc.want)
			}
		})
	}
}

func TestParseServiceNoNamespaceIsDistinct(t *testing.T) {
	_, err := ParseService("quote", "")
	if !errors.Is(err, ErrNoNamespace) {
		t.Fatalf("err = %v, want ErrNoNamespace", err)
	}
	if _, err := ParseService("quote.default", ""); err != nil {
		t.Fatalf("name.namespace needs no Mapping namespace: %v", err)
	}
	if _, err := ParseService("quote:99999", ""); errors.Is(err, ErrNoNamespace) {
		t.Fatalf("a bad port is not a namespace problem: %v", err)
	}
}

func TestEffectivePort(t *testing.T) {
	cases := []struct {
		in        string
		tls       bool
		want      uint16
		wantsPort bool
	}{
		{"quote", false, 80, false},
		{"quote", true, 443, false}, // why the webhook pins :80
		{"quote:0", true, 443, false},
		{"quote:", true, 443, false},
		{"quote:8080", true, 8080, true},
		{"quote:080", false, 80, true},
	}
	for _, tc := range cases {
		p, err := ParseService(tc.in, "default")
		if err != nil {
			t.Fatal(err)
		}
		if got := p.EffectivePort(tc.tls); got != tc.want || p.HasPort() != tc.wantsPort {
			t.Errorf("%q tls=%v: port %d HasPort %v, want %d %v", tc.in, tc.tls, got, p.HasPort(), tc.want, tc.wantsPort)
		}
	}
}

func TestPinPort(t *testing.T) {
	cases := map[string]string{
		"quote":                           "quote:80",
		"quote.default":                   "quote.default:80",
		"quote.default.svc.cluster.local": "quote.default.svc.cluster.local:80",
		"quote:":                          "quote:80",
		"quote:0":                         "quote:80",
		"quote:8080":                      "quote:80",
		"quote/foo":                       "quote:80/foo",
		"quote?x=1":                       "quote:80?x=1",
		"quote#frag":                      "quote:80#frag",
		"//quote":                         "//quote:80",
		"user@quote/p":                    "user@quote:80/p",
		"http://quote/x":                  "http://quote:80/x",
		"[::1]":                           "[::1]:80",
		"[::1]:9/x":                       "[::1]:80/x",
	}
	for in, want := range cases {
		got := pinPort(in, 80)
		if got != want {
			t.Errorf("pinPort(%q) = %q, want %q", in, got, want)
		}
		before, err1 := ParseService(in, "default")
		after, err2 := ParseService(got, "default")
		if err1 != nil || err2 != nil {
			t.Fatalf("%q: %v / %q: %v", in, err1, got, err2)
		}
		if after.Port != "80" || after.Host != before.Host || after.Namespace != before.Namespace || after.Scheme != before.Scheme {
			t.Errorf("pinned %q -> %q parses as %+v, was %+v", in, got, after, before)
		}
	}
}

// FuzzParseService: never panics; a parsed non-IP, non-localhost host always has a namespace;
// pinning the port of a Kubernetes Service name keeps host and namespace and is idempotent.
func FuzzParseService(f *testing.F) {
	for _, s := range []string{
		"quote", "quote.default", "quote.default:8080", "quote.default.svc.cluster.local:80",
		"http://quote", "HTTPS://q.ns", "10.0.0.1:80", "[::1]:80", "::1", "api.example.com",
		"quote/foo?x#y", "", "::::", "http://", ":80", "quote:notaport", "quote:99999", "квота",
		"user@quote", "//quote", "quote.", ".q", "q:", "q:0", "[fe80::1%25eth0]:1", "a@b@c",
	} {
		f.Add(s, "default")
	}
	f.Add("quote", "")
	f.Fuzz(func(t *testing.T, s, ns string) {
		p, err := ParseService(s, ns)
		if err != nil {
			return
		}
		if p.Host == "" {
			t.Fatalf("%q: empty host", s)
		}
		if !p.IsIP && !p.IsLocalhost && p.Namespace == "" {
			t.Fatalf("ParseService(%q, %q) = %+v: no namespace", s, ns, p)
		}
		if p.InCluster && (p.IsIP || p.IsLocalhost || p.Name == "") {
			t.Fatalf("%q: inconsistent %+v", s, p)
		}
		if !p.InCluster {
			return // Decide pins only Kubernetes Service names
		}
		pinned := pinPort(s, 80)
		q, err := ParseService(pinned, ns)
		if err != nil {
			t.Fatalf("pinned %q -> %q: %v", s, pinned, err)
		}
		if q.Port != "80" || q.Host != p.Host || q.Namespace != p.Namespace || q.Scheme != p.Scheme || q.InCluster != p.InCluster {
			t.Fatalf("pinned %q -> %q: %+v, was %+v", s, pinned, q, p)
		}
		if again := pinPort(pinned, 80); again != pinned {
			t.Fatalf("pinning %q twice: %q then %q", s, pinned, again)
		}
	})
}
