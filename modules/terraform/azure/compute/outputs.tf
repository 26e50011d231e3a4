output "cluster_id" {
  description = "ID of the AKS cluster."
  value       = azurerm_kubernetes_cluster.main.id
}

output "cluster_name" {
  description = "Name of the AKS cluster."
  value       = azurerm_kubernetes_cluster.main.name
}

output "resource_group_name" {
  description = "Resource group of the cluster."
  value       = azurerm_resource_group.aks.name
}

output "node_resource_group" {
  description = "Resource group AKS keeps the nodes in."
  value       = azurerm_kubernetes_cluster.main.node_resource_group
}

output "kubernetes_version" {
  description = "Kubernetes version the control plane runs."
  value       = azurerm_kubernetes_cluster.main.current_kubernetes_version
}

output "oidc_issuer_url" {
  description = "OIDC issuer for workload identity federation."
  value       = azurerm_kubernetes_cluster.main.oidc_issuer_url
}

output "kubelet_identity_object_id" {
  description = "Object ID of the kubelet identity (grant it AcrPull on a registry)."
  value       = azurerm_kubernetes_cluster.main.kubelet_identity[0].object_id
}

# No kubeconfig output: credentials stay out of state outputs and job logs.
output "get_credentials_command" {
  description = "How an operator fetches credentials."
  value       = "az aks get-credentials --resource-group ${azurerm_resource_group.aks.name} --name ${azurerm_kubernetes_cluster.main.name}"
}
