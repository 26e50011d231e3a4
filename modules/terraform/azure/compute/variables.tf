variable "subscription_id" {
  description = "Azure subscription ID; null reads ARM_SUBSCRIPTION_ID from the environment."
  type        = string
  default     = null
}

variable "environment" {
  description = "Environment name used in resource names; empty uses the Terraform workspace (MasterChief selects one per environment)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([a-z0-9][a-z0-9-]{0,15})?$", var.environment))
    error_message = "environment must be empty or 1-16 lowercase letters, digits and hyphens."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name (the same as azure-networking's, to find its network)."
  type        = string
  default     = "masterchief"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,23}$", var.name_prefix))
    error_message = "name_prefix must be 2-24 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "location" {
  description = "Azure region; null uses the network's region."
  type        = string
  default     = null
}

# --- the network made by azure-networking ---------------------------------------
# Empty names follow azure-networking's naming for the same name_prefix and
# environment: rg-<prefix>-<env>-network / vnet-<prefix>-<env> / snet-aks.

variable "network_resource_group_name" {
  description = "Resource group of the virtual network; empty derives it."
  type        = string
  default     = ""
}

variable "vnet_name" {
  description = "Virtual network name; empty derives it."
  type        = string
  default     = ""
}

variable "subnet_name" {
  description = "Subnet for the cluster nodes."
  type        = string
  default     = "snet-aks"
}

# --- cluster ------------------------------------------------------------------------

variable "kubernetes_version" {
  description = "Kubernetes version (\"1.30\" picks the newest patch); null lets AKS choose at creation."
  type        = string
  default     = null

  validation {
    condition     = var.kubernetes_version == null || can(regex("^1\\.[0-9]+(\\.[0-9]+)?$", var.kubernetes_version))
    error_message = "kubernetes_version must look like 1.30 or 1.30.4."
  }
}

variable "sku_tier" {
  description = "Control plane tier: Free (no SLA), Standard (uptime SLA) or Premium."
  type        = string
  default     = "Free"

  validation {
    condition     = contains(["Free", "Standard", "Premium"], var.sku_tier)
    error_message = "sku_tier must be Free, Standard or Premium."
  }
}

variable "automatic_upgrade_channel" {
  description = "Cluster auto-upgrade channel: patch, stable, rapid, node-image or none."
  type        = string
  default     = "patch"

  validation {
    condition     = contains(["patch", "stable", "rapid", "node-image", "none"], var.automatic_upgrade_channel)
    error_message = "automatic_upgrade_channel must be patch, stable, rapid, node-image or none."
  }
}

variable "availability_zones" {
  description = "Availability zones of both node pools; empty for regions without zones."
  type        = list(string)
  default     = ["1", "2", "3"]
}

variable "api_authorized_ip_ranges" {
  description = "Source ranges allowed to reach the API server; empty leaves it open to all."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.api_authorized_ip_ranges : can(cidrhost(cidr, 0))])
    error_message = "api_authorized_ip_ranges must be CIDR blocks."
  }
}

variable "admin_group_object_ids" {
  description = "Entra ID groups that administer the cluster.  Non-empty turns on Entra ID authentication with Azure RBAC and disables local accounts."
  type        = list(string)
  default     = []
}

variable "log_analytics_workspace_id" {
  description = "Log Analytics workspace for Container Insights; null turns it off."
  type        = string
  default     = null
}

# --- networking inside the cluster (Azure CNI overlay with Cilium) -----------------

variable "pod_cidr" {
  description = "Overlay range for pod IPs; must not overlap the virtual network."
  type        = string
  default     = "192.168.0.0/16"
}

variable "service_cidr" {
  description = "Range for Kubernetes service IPs; must not overlap the virtual network."
  type        = string
  default     = "172.16.0.0/16"
}

variable "dns_service_ip" {
  description = "kube-dns address, inside service_cidr."
  type        = string
  default     = "172.16.0.10"
}

# --- node pools ---------------------------------------------------------------------

variable "system_node_pool" {
  description = "The system node pool (cluster add-ons only: tainted CriticalAddonsOnly)."
  type = object({
    vm_size         = optional(string, "Standard_D4ds_v5")
    min_count       = optional(number, 2)
    max_count       = optional(number, 3)
    os_disk_size_gb = optional(number, 128)
    max_pods        = optional(number, 110)
  })
  default = {}

  validation {
    condition     = var.system_node_pool.min_count >= 1 && var.system_node_pool.min_count <= var.system_node_pool.max_count
    error_message = "system_node_pool: need 1 <= min_count <= max_count."
  }
}

variable "user_node_pool" {
  description = "The user node pool, where workloads run."
  type = object({
    name            = optional(string, "user")
    vm_size         = optional(string, "Standard_D4ds_v5")
    min_count       = optional(number, 1)
    max_count       = optional(number, 5)
    os_disk_size_gb = optional(number, 128)
    max_pods        = optional(number, 110)
    node_labels     = optional(map(string), {})
    node_taints     = optional(list(string), [])
  })
  default = {}

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{0,11}$", var.user_node_pool.name))
    error_message = "user_node_pool.name must be 1-12 lowercase letters and digits, starting with a letter."
  }

  validation {
    condition     = var.user_node_pool.min_count >= 0 && var.user_node_pool.min_count <= var.user_node_pool.max_count
    error_message = "user_node_pool: need 0 <= min_count <= max_count."
  }
}

variable "user_node_count" {
  description = "Upper bound of the user pool's autoscaler (module parameter); null keeps user_node_pool.max_count."
  type        = number
  default     = null

  validation {
    condition     = var.user_node_count == null || (var.user_node_count >= 1 && var.user_node_count <= 100)
    error_message = "user_node_count must be between 1 and 100."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
