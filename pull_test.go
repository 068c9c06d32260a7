package dtma_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
)

func TestRegistryAuthValidate(t *testing.T) {
	for _, tc := range []struct {
		a     dtma.RegistryAuth
		field string
	}{
		{dtma.RegistryAuth{Username: "u", Password: "p"}, ""},
		{dtma.RegistryAuth{IdentityToken: "t"}, ""},
		{dtma.RegistryAuth{Username: "u", IdentityToken: "t"}, ""},
		{dtma.RegistryAuth{Username: "u"}, "registry_auth.password"},
		{dtma.RegistryAuth{Password: "p"}, "registry_auth.username"},
		{dtma.RegistryAuth{Username: "u", Password: "p", IdentityToken: "t"}, "registry_auth.identity_token"},
		{dtma.RegistryAuth{Username: "u", Password: strings.Repeat("p", 20000)}, "registry_auth"},
	} {
		err := tc.a.Validate()
		if got := dtma.ErrorField(err); got != tc.field || (tc.field != "") != (err != nil) {
			t.Errorf("%v: err %v (field %q), want field %q", tc.a, err, got, tc.field)
		}
		if err != nil && strings.Contains(err.Error(), "p") && strings.Contains(err.Error(), strings.Repeat("p", 3)) {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

// No formatting or logging of a credential shows its secrets.
func TestRegistryAuthNeverPrinted(t *testing.T) {
	a := dtma.RegistryAuth{Username: "user-x", Password: "secret-pw", IdentityToken: ""}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("pull", "auth", a, "ptr", &a)
	for _, s := range []string{fmt.Sprint(a), fmt.Sprintf("%v %+v %#v %s", a, a, a, &a), logged.String()} {
		if strings.Contains(s, "secret-pw") || strings.Contains(s, "user-x") {
			t.Errorf("credential printed: %s", s)
		}
	}
	o := dtma.PullOptions{Auth: &a}
	if got := dtma.PullOptionsFrom(dtma.WithPullOptions(context.Background(), o)); got.Auth != &a {
		t.Errorf("PullOptionsFrom = %+v", got)
	}
	if got := dtma.PullOptionsFrom(context.Background()); got.Auth != nil || got.Progress != nil {
		t.Errorf("PullOptionsFrom(empty) = %+v", got)
	}
}
