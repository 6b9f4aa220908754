package wire

// CredentialsFile is the name of the file, in the data directory, where the
// first start of `dlm serve` stores the keys it made (mode 0600) and where
// the CLI and client.FromEnv find a key when none is given.
const CredentialsFile = "credentials.json"

// Credentials is the content of CredentialsFile. AdminKey is empty when the
// operator chose the admin key (DLM_ADMIN_KEY): the server stores only the
// keys it generated, never one it was given.
type Credentials struct {
	AdminKey    string `json:"admin_key,omitempty"`
	Tenant      string `json:"tenant"`
	TenantKey   string `json:"tenant_key"`
	TenantKeyID string `json:"tenant_key_id"`
}
