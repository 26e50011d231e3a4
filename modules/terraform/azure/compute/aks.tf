locals {
  environment = var.environment != "" ? var.environment : terraform.workspace
  base_name   = "${var.name_prefix}-${local.environment}"

  network_resource_group_name = var.network_resource_group_name != "" ? var.network_resource_group_name : "rg-${local.base_name}-network"
  vnet_name                   = var.vnet_name != "" ? var.vnet_name : "vnet-${local.base_name}"

  user_max_count = coalesce(var.user_node_count, var.user_node_pool.max_count)
  user_min_count = min(var.user_node_pool.min_count, local.user_max_count)

  tags = merge(
    {
      environment = local.environment
      managed-by  = "masterchief"
      module      = "azure-aks"
    },
    var.tags,
  )
}

# The network is azure-networking's (a required module): looked up, not owned.
data "azurerm_resource_group" "network" {
  name = local.network_resource_group_name
}

data "azurerm_subnet" "aks" {
  name                 = var.subnet_name
  virtual_network_name = local.vnet_name
  resource_group_name  = data.azurerm_resource_group.network.name
}

resource "azurerm_resource_group" "aks" {
  name     = "rg-${local.base_name}-aks"
  location = coalesce(var.location, data.azurerm_resource_group.network.location)
  tags     = local.tags
}

resource "azurerm_kubernetes_cluster" "main" {
  name                = "aks-${local.base_name}"
  location            = azurerm_resource_group.aks.location
  resource_group_name = azurerm_resource_group.aks.name
  dns_prefix          = substr("${var.name_prefix}-${local.environment}", 0, 54)
  node_resource_group = "rg-${local.base_name}-aks-nodes"
  kubernetes_version  = var.kubernetes_version
  sku_tier            = var.sku_tier

  automatic_upgrade_channel = var.automatic_upgrade_channel == "none" ? null : var.automatic_upgrade_channel
  node_os_upgrade_channel   = "NodeImage"

  oidc_issuer_enabled               = true
  workload_identity_enabled         = true
  role_based_access_control_enabled = true
  azure_policy_enabled              = true
  local_account_disabled            = length(var.admin_group_object_ids) > 0

  default_node_pool {
    name                         = "system"
    vm_size                      = var.system_node_pool.vm_size
    vnet_subnet_id               = data.azurerm_subnet.aks.id
    zones                        = length(var.availability_zones) > 0 ? var.availability_zones : null
    auto_scaling_enabled         = true
    min_count                    = var.system_node_pool.min_count
    max_count                    = var.system_node_pool.max_count
    os_disk_size_gb              = var.system_node_pool.os_disk_size_gb
    max_pods                     = var.system_node_pool.max_pods
    only_critical_addons_enabled = true
    temporary_name_for_rotation  = "systemtmp"
    tags                         = local.tags

    upgrade_settings {
      max_surge = "33%"
    }
  }

  identity {
    type = "SystemAssigned"
  }

  network_profile {
    network_plugin      = "azure"
    network_plugin_mode = "overlay"
    network_data_plane  = "cilium"
    network_policy      = "cilium"
    pod_cidr            = var.pod_cidr
    service_cidr        = var.service_cidr
    dns_service_ip      = var.dns_service_ip
    load_balancer_sku   = "standard"
    outbound_type       = "loadBalancer"
  }

  dynamic "api_server_access_profile" {
    for_each = length(var.api_authorized_ip_ranges) > 0 ? [1] : []
    content {
      authorized_ip_ranges = var.api_authorized_ip_ranges
    }
  }

  dynamic "azure_active_directory_role_based_access_control" {
    for_each = length(var.admin_group_object_ids) > 0 ? [1] : []
    content {
      azure_rbac_enabled     = true
      admin_group_object_ids = var.admin_group_object_ids
    }
  }

  dynamic "oms_agent" {
    for_each = var.log_analytics_workspace_id == null ? [] : [1]
    content {
      log_analytics_workspace_id = var.log_analytics_workspace_id
    }
  }

  tags = local.tags

  lifecycle {
    # The cluster autoscaler owns the node counts.
    ignore_changes = [default_node_pool[0].node_count]
  }
}

resource "azurerm_kubernetes_cluster_node_pool" "user" {
  name                  = var.user_node_pool.name
  kubernetes_cluster_id = azurerm_kubernetes_cluster.main.id
  mode                  = "User"
  vm_size               = var.user_node_pool.vm_size
  vnet_subnet_id        = data.azurerm_subnet.aks.id
  zones                 = length(var.availability_zones) > 0 ? var.availability_zones : null
  auto_scaling_enabled  = true
  min_count             = local.user_min_count
  max_count             = local.user_max_count
  os_disk_size_gb       = var.user_node_pool.os_disk_size_gb
  max_pods              = var.user_node_pool.max_pods
  node_labels           = var.user_node_pool.node_labels
  node_taints           = var.user_node_pool.node_taints
  orchestrator_version  = var.kubernetes_version
  tags                  = local.tags

  upgrade_settings {
    max_surge = "33%"
  }

  lifecycle {
    ignore_changes = [node_count]
  }
}

# With its own system-assigned identity the cluster needs to manage load
# balancer IPs in the node subnet, which lives in the network's resource group.
resource "azurerm_role_assignment" "aks_network" {
  scope                            = data.azurerm_subnet.aks.id
  role_definition_name             = "Network Contributor"
  principal_id                     = azurerm_kubernetes_cluster.main.identity[0].principal_id
  skip_service_principal_aad_check = true
}
