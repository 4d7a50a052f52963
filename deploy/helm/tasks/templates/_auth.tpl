{{/* ---------------------------------------------------------------------------
Authentication (auth.*, tests.apiToken): where the API-token file and the Helm test's
token come from, the IdP's egress ports, and the checks a JSON schema cannot express.
--------------------------------------------------------------------------- */}}

{{/* The Secret the chart renders itself from the development-only inline values
(auth.apiTokens.developmentLines, tests.apiToken.developmentToken). */}}
{{- define "tasks.auth.developmentSecretName" -}}
{{- printf "%s-auth-development" (include "tasks.fullname" .) -}}
{{- end -}}

{{/* Key of the API-token lines in the development Secret: the file's name in the
secrets directory. */}}
{{- define "tasks.auth.developmentLinesKey" -}}auth.api_tokens{{- end -}}

{{/* Key of the Helm test's plain token in the development Secret. */}}
{{- define "tasks.auth.developmentTestTokenKey" -}}helm-test-token{{- end -}}

{{/* "true" when the chart renders the development Secret. */}}
{{- define "tasks.auth.createDevelopmentSecret" -}}
{{- if or .Values.auth.apiTokens.developmentLines .Values.tests.apiToken.developmentToken -}}true{{- end -}}
{{- end -}}

{{/* The Secret holding the API-token file (empty: no API tokens). */}}
{{- define "tasks.auth.apiTokensSecretName" -}}
{{- $t := .Values.auth.apiTokens -}}
{{- if $t.existingSecret -}}
{{- $t.existingSecret -}}
{{- else if $t.developmentLines -}}
{{- include "tasks.auth.developmentSecretName" . -}}
{{- end -}}
{{- end -}}

{{- define "tasks.auth.apiTokensKey" -}}
{{- if .Values.auth.apiTokens.existingSecret -}}
{{- .Values.auth.apiTokens.key -}}
{{- else -}}
{{- include "tasks.auth.developmentLinesKey" . -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the Helm test's plain token (empty: none). */}}
{{- define "tasks.tests.tokenSecretName" -}}
{{- $t := .Values.tests.apiToken -}}
{{- if $t.existingSecret -}}
{{- $t.existingSecret -}}
{{- else if $t.developmentToken -}}
{{- include "tasks.auth.developmentSecretName" . -}}
{{- end -}}
{{- end -}}

{{- define "tasks.tests.tokenKey" -}}
{{- if .Values.tests.apiToken.existingSecret -}}
{{- .Values.tests.apiToken.key -}}
{{- else -}}
{{- include "tasks.auth.developmentTestTokenKey" . -}}
{{- end -}}
{{- end -}}

{{/* Where the test pod finds its token. */}}
{{- define "tasks.tests.tokenDir" -}}/var/run/secrets/tasks-test{{- end -}}

{{/* Port of an http(s) URL: the explicit one, else 443 for https, 80 for http. */}}
{{- define "tasks.urlPort" -}}
{{- $u := urlParse . -}}
{{- $explicit := regexFind ":[0-9]+$" $u.host | trimPrefix ":" -}}
{{- if $explicit -}}
{{- $explicit -}}
{{- else if eq $u.scheme "http" -}}
80
{{- else -}}
443
{{- end -}}
{{- end -}}

{{/* TCP ports the pods reach the IdP on, comma-separated: auth.egress.ports, or the
ports of auth.issuer and auth.jwksUrl. */}}
{{- define "tasks.auth.egressPorts" -}}
{{- $a := .Values.auth -}}
{{- $ports := list -}}
{{- if $a.egress.ports -}}
{{- range $a.egress.ports }}{{ $ports = append $ports (include "tasks.int" .) }}{{ end -}}
{{- else -}}
{{- range (compact (list $a.issuer $a.jwksUrl)) }}{{ $ports = append $ports (include "tasks.urlPort" .) }}{{ end -}}
{{- end -}}
{{- $ports | uniq | join "," -}}
{{- end -}}

{{/* Environments where the development-only inline values are refused. */}}
{{- define "tasks.auth.sharedEnvironment" -}}
{{- if has (lower (toString .Values.environment)) (list "staging" "production") -}}true{{- end -}}
{{- end -}}

{{/* Included by the templates that depend on auth.* and tests.apiToken, after the
general validation (so a release missing its database says that first). */}}
{{- define "tasks.auth.validate" -}}
{{- include "tasks.validate" . -}}
{{- $a := .Values.auth -}}
{{- $t := .Values.tests.apiToken -}}
{{- if include "tasks.auth.sharedEnvironment" . -}}
{{- if $a.apiTokens.developmentLines -}}
{{- fail (printf "auth.apiTokens.developmentLines is for development only and is refused with environment=%s: put the API-token lines in a Secret (kubectl create secret generic ... --from-file=%s=./api_tokens) and name it in auth.apiTokens.existingSecret" .Values.environment $a.apiTokens.key) -}}
{{- end -}}
{{- if $t.developmentToken -}}
{{- fail (printf "tests.apiToken.developmentToken is for development only and is refused with environment=%s: put the Helm test's token in a Secret (kubectl create secret generic ... --from-file=%s=./token) and name it in tests.apiToken.existingSecret" .Values.environment $t.key) -}}
{{- end -}}
{{- end -}}
{{- if and $a.apiTokens.existingSecret $a.apiTokens.developmentLines -}}
{{- fail "ambiguous API tokens: set only one of auth.apiTokens.existingSecret and auth.apiTokens.developmentLines" -}}
{{- end -}}
{{- if and $t.existingSecret $t.developmentToken -}}
{{- fail "ambiguous Helm test token: set only one of tests.apiToken.existingSecret and tests.apiToken.developmentToken" -}}
{{- end -}}
{{- if $a.enabled -}}
{{- if not (or $a.issuer (include "tasks.auth.apiTokensSecretName" .)) -}}
{{- fail "authentication is on (auth.enabled) but nothing can authenticate: set auth.issuer and auth.audiences (OIDC access tokens), or auth.apiTokens.existingSecret (a Secret of API-token lines, see the chart README \"Calling the API\"); auth.apiTokens.developmentLines in development; the chart never generates credentials. Turning authentication off takes an explicit auth.enabled=false" -}}
{{- end -}}
{{- if and $a.issuer (not $a.audiences) -}}
{{- fail "auth.issuer needs auth.audiences: the audiences (aud) a token must name to be accepted" -}}
{{- end -}}
{{- if and $a.jwksUrl (not $a.issuer) -}}
{{- fail "auth.jwksUrl has no effect without auth.issuer: set the issuer the keys belong to" -}}
{{- end -}}
{{- if and .Values.tests.enabled (not (include "tasks.tests.tokenSecretName" .)) -}}
{{- fail "tests.enabled: the Helm test calls the API, which needs a token while auth.enabled: set tests.apiToken.existingSecret (a Secret holding a token with scopes tasks:read and tasks:write, key tests.apiToken.key), tests.apiToken.developmentToken in development, or tests.enabled=false" -}}
{{- end -}}
{{- end -}}
{{- end -}}
