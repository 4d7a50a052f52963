{{/* ---------------------------------------------------------------------------
postgresql.volumePermissions: an init container that gives the data volume to
PostgreSQL's user, for storage that ignores fsGroup (NFS, EFS, some Azure Files
classes), where the volume stays root-owned and initdb or the server fails.

Least privilege: it must be UID 0 (nothing else may chown another user's files),
but it keeps only CAP_CHOWN (change owners) and CAP_DAC_OVERRIDE (walk into a data
directory that is 0700 and owned by another UID); every other capability is
dropped, no privilege escalation, read-only root filesystem, RuntimeDefault
seccomp. Both capabilities are in the container runtimes' default set, so the pod
still meets the `baseline` Pod Security Standard, but not `restricted` (which
forbids UID 0 and any added capability other than NET_BIND_SERVICE).
scripts/lib/volume_permissions_test.py runs this script with exactly these
capabilities, and with each one removed, against a wrongly owned data directory.

Like fsGroupChangePolicy OnRootMismatch, it does nothing when the volume root and
PGDATA already have the right owner; otherwise it changes only what differs.
The postgres image itself runs it: no other image to pull or pin.
--------------------------------------------------------------------------- */}}
{{- define "tasks.postgresql.volumePermissionsContainer" -}}
{{- $pg := .Values.postgresql -}}
{{- $owner := printf "%d:%d" (int $pg.podSecurityContext.runAsUser) (int $pg.podSecurityContext.fsGroup) -}}
- name: volume-permissions
  image: {{ include "tasks.postgresql.image" . }}
  imagePullPolicy: {{ $pg.image.pullPolicy }}
  command:
    - sh
    - -ec
    - |
      dir=/var/lib/postgresql/data
      owner={{ $owner }}
      if [ "$(stat -c %u:%g "$dir")" = "$owner" ] && { [ ! -e "$dir/pgdata" ] || [ "$(stat -c %u:%g "$dir/pgdata")" = "$owner" ]; }; then
        echo "volume-permissions: $dir already owned by $owner"
        exit 0
      fi
      find "$dir" -xdev \( ! -user "${owner%:*}" -o ! -group "${owner#*:}" \) -exec chown -h "$owner" {} +
      echo "volume-permissions: $dir now owned by $owner"
  securityContext:
    runAsNonRoot: false
    runAsUser: 0
    runAsGroup: 0
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
    privileged: false
    capabilities:
      drop:
        - ALL
      add:
        - CHOWN
        - DAC_OVERRIDE
    seccompProfile:
      type: RuntimeDefault
  resources:
    {{- toYaml $pg.volumePermissions.resources | nindent 4 }}
  volumeMounts:
    - name: data
      mountPath: /var/lib/postgresql/data
{{- end -}}
