package docker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/moby/moby/api/types/registry"

	"github.com/agentopia/dtma"
)

// dockerHubAuthKey is the key config.json and credential helpers use for
// Docker Hub.
const dockerHubAuthKey = "https://index.docker.io/v1/"

// credHelperTimeout bounds one run of a credential helper.
const credHelperTimeout = 10 * time.Second

// dockerConfigFile is the part of a Docker CLI config.json that holds
// registry credentials.
type dockerConfigFile struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
	} `json:"auths"`
	CredsStore  string            `json:"credsStore"`
	CredHelpers map[string]string `json:"credHelpers"`
}

// pullAuth returns the X-Registry-Auth header value for a pull from host
// (an image reference's registry domain): the request's credential when
// it has one, else the host's from Options.DockerConfig (an inline entry,
// or its credential helper), else "" (anonymous). The credential is only
// ever encoded into the header; errors name the registry and the config
// file, never a secret.
func (r *Runtime) pullAuth(ctx context.Context, host string, req *dtma.RegistryAuth) (string, error) {
	var ac registry.AuthConfig
	switch {
	case req != nil:
		ac = registry.AuthConfig{Username: req.Username, Password: req.Password, IdentityToken: req.IdentityToken}
	case r.dockerConfig != "":
		var err error
		if ac, err = hostCredential(ctx, r.dockerConfig, host); err != nil {
			return "", err
		}
	}
	if ac == (registry.AuthConfig{}) {
		return "", nil
	}
	ac.ServerAddress = host
	if host == "docker.io" {
		ac.ServerAddress = dockerHubAuthKey
	}
	b, err := json.Marshal(ac)
	if err != nil {
		return "", fmt.Errorf("encode credential for %s: %w", host, err)
	}
	return base64.URLEncoding.EncodeToString(b), nil
}

// hostCredential reads the credential for registry host from the Docker
// config file at path: credHelpers[host], else an auths entry, else the
// credsStore helper. A missing file or entry is no credential (zero
// value, no error); an unreadable or malformed file, or a failing helper,
// is EUNAVAILABLE naming the file or helper.
func hostCredential(ctx context.Context, path, host string) (registry.AuthConfig, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return registry.AuthConfig{}, nil
	}
	if err != nil {
		return registry.AuthConfig{}, dtma.Errorf(dtma.EUNAVAILABLE, "read docker config %s: %v", path, err)
	}
	var cf dockerConfigFile
	if err := json.Unmarshal(data, &cf); err != nil {
		return registry.AuthConfig{}, dtma.Errorf(dtma.EUNAVAILABLE, "docker config %s is not valid JSON", path)
	}
	key := host
	if host == "docker.io" {
		key = dockerHubAuthKey
	}
	if helper := cf.CredHelpers[host]; helper != "" {
		return runCredHelper(ctx, helper, key)
	}
	for k, e := range cf.Auths {
		if authKeyHost(k) != host {
			continue
		}
		ac := registry.AuthConfig{Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken}
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return registry.AuthConfig{}, dtma.Errorf(dtma.EUNAVAILABLE, "docker config %s: the auth of %s is not base64", path, host)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return registry.AuthConfig{}, dtma.Errorf(dtma.EUNAVAILABLE, "docker config %s: the auth of %s is not user:password", path, host)
			}
			ac.Username, ac.Password = user, pass
		}
		if ac != (registry.AuthConfig{}) {
			return ac, nil
		}
	}
	if cf.CredsStore != "" {
		return runCredHelper(ctx, cf.CredsStore, key)
	}
	return registry.AuthConfig{}, nil
}

// authKeyHost returns the registry host of a config.json auths key
// ("https://index.docker.io/v1/" -> "docker.io", "https://ghcr.io" ->
// "ghcr.io", "127.0.0.1:5000" as it is).
func authKeyHost(k string) string {
	if k == dockerHubAuthKey || k == "index.docker.io" || k == "registry-1.docker.io" {
		return "docker.io"
	}
	k = strings.TrimPrefix(strings.TrimPrefix(k, "https://"), "http://")
	k, _, _ = strings.Cut(k, "/")
	if k == "index.docker.io" || k == "registry-1.docker.io" {
		return "docker.io"
	}
	return k
}

// runCredHelper runs docker-credential-<helper> get for serverURL, the
// Docker credential helper protocol. "credentials not found" is no
// credential; any other failure is EUNAVAILABLE naming the helper (its
// output is not passed on: it may hold a secret).
func runCredHelper(ctx context.Context, helper, serverURL string) (registry.AuthConfig, error) {
	if strings.ContainsAny(helper, "/\\ ") {
		return registry.AuthConfig{}, dtma.Errorf(dtma.EUNAVAILABLE, "credential helper %q: not a helper name", helper)
	}
	ctx, cancel := context.WithTimeout(ctx, credHelperTimeout)
	defer cancel()
	name := "docker-credential-" + helper
	cmd := exec.CommandContext(ctx, name, "get")
	cmd.Stdin = strings.NewReader(serverURL)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if strings.Contains(strings.ToLower(out.String()+errb.String()), "credentials not found") {
			return registry.AuthConfig{}, nil
		}
		return registry.AuthConfig{}, dtma.Errorf(dtma.EUNAVAILABLE, "credential helper %s for %s failed: %v", name, serverURL, err)
	}
	var res struct {
		Username string `json:"Username"`
		Secret   string `json:"Secret"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return registry.AuthConfig{}, dtma.Errorf(dtma.EUNAVAILABLE, "credential helper %s for %s answered no credential JSON", name, serverURL)
	}
	if res.Username == "<token>" {
		return registry.AuthConfig{IdentityToken: res.Secret}, nil
	}
	return registry.AuthConfig{Username: res.Username, Password: res.Secret}, nil
}
