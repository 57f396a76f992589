package envtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Helm runs the real helm that `make helm` builds, with its configuration, cache and data
// in home (so nothing of the machine's leaks in) and extra environment variables env, and
// returns its standard output.
func Helm(home string, env []string, args ...string) (string, error) {
	bin := filepath.Join(RepoRoot(), "bin", "tools", "helm")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%w: run `make helm` (`make test` does)", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), append([]string{"HELM_CACHE_HOME=" + home, "HELM_CONFIG_HOME=" + home, "HELM_DATA_HOME=" + home}, env...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("helm %v: %w: %s", args, err, errOut.String())
	}
	return out.String(), nil
}
