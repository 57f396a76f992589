package mesh

import (
	"fmt"
	"regexp"
	"strconv"
)

// Release is an Istio minor release, read from an image tag.
type Release struct{ Major, Minor int }

func (r Release) String() string { return fmt.Sprintf("%d.%d", r.Major, r.Minor) }

// releaseOf reads the release from an image tag: "1.29.1", "1.29.1-distroless", "1.29".
var releaseOf = regexp.MustCompile(`^(\d+)\.(\d+)(?:[.-]|$)`)

// ParseRelease reads the Istio release of an image tag; ok is false for a tag that names
// none ("latest", a build hash).
func ParseRelease(tag string) (r Release, ok bool) {
	m := releaseOf.FindStringSubmatch(tag)
	if m == nil {
		return Release{}, false
	}
	major, err1 := strconv.Atoi(m[1])
	minor, err2 := strconv.Atoi(m[2])
	if err1 != nil || err2 != nil {
		return Release{}, false
	}
	return Release{major, minor}, true
}

// Skew is how a proxy's release stands against its control plane's.
type Skew int

const (
	// SkewNone: the same release.
	SkewNone Skew = iota
	// SkewOlder: the proxy is one minor release older, which Istio supports (the state
	// during an upgrade, until the workload restarts).
	SkewOlder
	// SkewUnsupported: the proxy is newer than the control plane, or more than one minor
	// release older, or of another major release.
	SkewUnsupported
)

// CheckSkew applies Istio's support policy (istio.io/latest/docs/releases/supported-releases,
// "Control Plane/Data Plane Skew": the control plane may be one version ahead of the data
// plane; the data plane may not be ahead of the control plane) and says why.
func CheckSkew(proxy, control Release) (Skew, string) {
	switch {
	case proxy == control:
		return SkewNone, ""
	case proxy.Major != control.Major:
		return SkewUnsupported, fmt.Sprintf("proxy release %s and control plane release %s are different major releases", proxy, control)
	case proxy.Minor > control.Minor:
		return SkewUnsupported, fmt.Sprintf("proxy release %s is newer than its control plane's %s, which Istio does not support", proxy, control)
	case control.Minor-proxy.Minor == 1:
		return SkewOlder, fmt.Sprintf("proxy release %s is one release older than its control plane's %s (supported; a restart brings it level)", proxy, control)
	default:
		return SkewUnsupported, fmt.Sprintf("proxy release %s is %d releases older than its control plane's %s; Istio supports one", proxy, control.Minor-proxy.Minor, control)
	}
}
