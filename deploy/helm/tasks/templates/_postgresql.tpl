{{/* The data of the PostgreSQL ConfigMap, and all its checksum covers: only what
PostgreSQL reads, never the metadata with its chart-version labels. */}}
{{- define "tasks.postgresql.configData" -}}
{{- $pg := .Values.postgresql -}}
pg_hba.conf: |
  # TYPE   DATABASE  USER      ADDRESS       METHOD
  # Inside the pod only: kubectl exec, the init scripts, the probes.
  local    all       all                     trust
  host     all       all       127.0.0.1/32  trust
  host     all       all       ::1/128       trust
  # The bootstrap superuser never logs in over the network.
  host     all       postgres  all           reject
  {{- if $pg.tls.enabled }}
  # Everyone else: TLS and a password; plain TCP is refused.
  hostssl  all       all       all           scram-sha-256
  hostnossl all      all       all           reject
  {{- else }}
  host     all       all       all           scram-sha-256
  {{- end }}
converge-roles.sh: |
  {{- .Files.Get "files/converge-roles.sh" | nindent 2 }}
converge-on-start.sh: |
  {{- .Files.Get "files/converge-on-start.sh" | nindent 2 }}
{{- end -}}
