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
  description = "Prefix of every resource name."
  type        = string
  default     = "masterchief"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,23}$", var.name_prefix))
    error_message = "name_prefix must be 2-24 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "location" {
  description = "Azure region."
  type        = string
  default     = "westeurope"
}

variable "address_space" {
  description = "Address space of the virtual network."
  type        = list(string)
  default     = ["10.20.0.0/16"]

  validation {
    condition     = length(var.address_space) > 0 && alltrue([for cidr in var.address_space : can(cidrhost(cidr, 0))])
    error_message = "address_space must be a non-empty list of CIDR blocks."
  }
}

variable "subnets" {
  description = <<-EOT
    Subnets of the virtual network, by name.  Each gets its own network security
    group holding inbound_rules (lower priority number wins; Azure's defaults
    still allow VNet and load-balancer traffic and deny the rest from the Internet).
  EOT
  type = map(object({
    address_prefixes  = list(string)
    service_endpoints = optional(list(string), [])
    inbound_rules = optional(list(object({
      name                    = string
      priority                = number
      access                  = optional(string, "Allow")
      protocol                = optional(string, "Tcp")
      destination_port_ranges = list(string)
      source_address_prefixes = list(string)
    })), [])
  }))
  default = {
    aks = {
      address_prefixes  = ["10.20.0.0/20"]
      service_endpoints = ["Microsoft.ContainerRegistry", "Microsoft.KeyVault", "Microsoft.Storage"]
      inbound_rules = [
        {
          name                    = "allow-https-from-internet"
          priority                = 100
          destination_port_ranges = ["80", "443"]
          source_address_prefixes = ["Internet"]
        },
      ]
    }
    app = {
      address_prefixes = ["10.20.16.0/24"]
      inbound_rules = [
        {
          name                    = "allow-https-from-internet"
          priority                = 100
          destination_port_ranges = ["443"]
          source_address_prefixes = ["Internet"]
        },
      ]
    }
    management = {
      address_prefixes = ["10.20.17.0/24"]
    }
  }

  validation {
    condition = alltrue(flatten([
      for name, subnet in var.subnets : [
        for rule in subnet.inbound_rules :
        rule.priority >= 100 && rule.priority <= 4096 && contains(["Allow", "Deny"], rule.access) && contains(["Tcp", "Udp", "Icmp", "*"], rule.protocol)
      ]
    ]))
    error_message = "inbound_rules: priority must be 100-4096, access Allow or Deny, protocol Tcp, Udp, Icmp or *."
  }
}

variable "ssh_allowed_cidrs" {
  description = "Source ranges allowed to reach SSH (22/tcp) in the management subnet; empty allows none."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.ssh_allowed_cidrs : can(cidrhost(cidr, 0))])
    error_message = "ssh_allowed_cidrs must be CIDR blocks (e.g. 203.0.113.0/24)."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
