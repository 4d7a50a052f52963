{{/* ---------------------------------------------------------------------------
DNS egress of the chart's pods (app and Helm test): one NetworkPolicyEgressRule
list item. networkPolicy.dns.peers wins when set; otherwise the peers and ports of
networkPolicy.dns.preset (README, "Cluster compatibility"):
  kube-dns        the cluster DNS pods (namespaceSelector + podSelector values), 53
  node-local-dns  NodeLocal DNSCache's address (a hostNetwork pod: no selector can
                  match it) + the kube-dns pods (the cache forwards misses, and pods
                  fall back to them while it restarts) + optionally the kube-dns
                  Service IP (iptables mode answers on it without DNAT), 53
  gke-cloud-dns   GKE Cloud DNS answers on the metadata address; only port 53 is
                  opened, so the metadata API (port 80) stays unreachable
  openshift-dns   the DNS operator's pods in openshift-dns, which listen on 5353
                  (policies see the pod port, after the Service's 53 -> 5353)
Usage: {{- include "tasks.networkPolicy.dnsEgress" . | nindent 4 }}
--------------------------------------------------------------------------- */}}
{{- define "tasks.networkPolicy.dnsEgress" -}}
{{- $dns := .Values.networkPolicy.dns -}}
{{- $ports := list 53 -}}
{{- $kubeDns := dict "namespaceSelector" (dict "matchLabels" $dns.namespaceSelector) "podSelector" (dict "matchLabels" $dns.podSelector) -}}
{{- $peers := list -}}
{{- if $dns.peers -}}
{{- $peers = $dns.peers -}}
{{- else if eq $dns.preset "kube-dns" -}}
{{- $peers = list $kubeDns -}}
{{- else if eq $dns.preset "node-local-dns" -}}
{{- $peers = list (dict "ipBlock" (dict "cidr" (include "tasks.hostCidr" $dns.nodeLocalAddress))) $kubeDns -}}
{{- with $dns.serviceIP -}}
{{- $peers = append $peers (dict "ipBlock" (dict "cidr" (include "tasks.hostCidr" .))) -}}
{{- end -}}
{{- else if eq $dns.preset "gke-cloud-dns" -}}
{{- $peers = list (dict "ipBlock" (dict "cidr" "169.254.169.254/32")) -}}
{{- else if eq $dns.preset "openshift-dns" -}}
{{- $peers = list (dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" "openshift-dns")) "podSelector" (dict "matchLabels" (dict "dns.operator.openshift.io/daemonset-dns" "default"))) -}}
{{- $ports = list 5353 -}}
{{- else -}}
{{- fail (printf "networkPolicy.dns.preset %q is not one of kube-dns, node-local-dns, gke-cloud-dns, openshift-dns (or set networkPolicy.dns.peers)" (toString $dns.preset)) -}}
{{- end -}}
- to:
    {{- toYaml $peers | nindent 4 }}
  ports:
    {{- range $ports }}
    - port: {{ . }}
      protocol: UDP
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end -}}

{{/* One address as a host CIDR: /32 for IPv4, /128 for IPv6. */}}
{{- define "tasks.hostCidr" -}}
{{- if contains ":" . -}}{{ . }}/128{{- else -}}{{ . }}/32{{- end -}}
{{- end -}}
