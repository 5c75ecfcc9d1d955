//go:build tools

// Package helmdocs pins helm-docs (github.com/norwoodj/helm-docs), which generates the charts' README.md from the
// `# --` comments of their values.yaml. The file is never compiled (build tag `tools`): its import keeps the
// requirement in go.mod and go.sum, and lab/charts.py builds the command with
// `go build github.com/norwoodj/helm-docs/cmd/helm-docs` in this module.
package helmdocs

import (
	_ "github.com/norwoodj/helm-docs/cmd/helm-docs"
)
