locals {
  environment = var.environment != "" ? var.environment : terraform.workspace
  base_name   = "${var.name_prefix}-${local.environment}"

  tags = merge(
    {
      environment = local.environment
      managed-by  = "masterchief"
      module      = "azure-networking"
    },
    var.tags,
  )

  # SSH into the management subnet, from ssh_allowed_cidrs only (priority
  # 110: keep the subnet's own inbound_rules off that number).
  ssh_rule = {
    name                    = "allow-ssh-from-admins"
    priority                = 110
    access                  = "Allow"
    protocol                = "Tcp"
    destination_port_ranges = ["22"]
    source_address_prefixes = var.ssh_allowed_cidrs
  }

  subnet_rules = {
    for name, subnet in var.subnets : name => concat(
      subnet.inbound_rules,
      [for rule in [local.ssh_rule] : rule if name == "management" && length(var.ssh_allowed_cidrs) > 0],
    )
  }

  # One azurerm_network_security_rule per (subnet, rule).
  nsg_rules = merge([
    for subnet, rules in local.subnet_rules : {
      for rule in rules : "${subnet}/${rule.name}" => merge(rule, { subnet = subnet })
    }
  ]...)
}

resource "azurerm_resource_group" "network" {
  name     = "rg-${local.base_name}-network"
  location = var.location
  tags     = local.tags
}

resource "azurerm_virtual_network" "main" {
  name                = "vnet-${local.base_name}"
  location            = azurerm_resource_group.network.location
  resource_group_name = azurerm_resource_group.network.name
  address_space       = var.address_space
  tags                = local.tags
}

resource "azurerm_subnet" "this" {
  for_each = var.subnets

  name                 = "snet-${each.key}"
  resource_group_name  = azurerm_resource_group.network.name
  virtual_network_name = azurerm_virtual_network.main.name
  address_prefixes     = each.value.address_prefixes
  service_endpoints    = each.value.service_endpoints
}

resource "azurerm_network_security_group" "this" {
  for_each = var.subnets

  name                = "nsg-${local.base_name}-${each.key}"
  location            = azurerm_resource_group.network.location
  resource_group_name = azurerm_resource_group.network.name
  tags                = local.tags
}

# Azure accepts a service tag (Internet, AzureLoadBalancer ...) only as the
# single source_address_prefix, never inside source_address_prefixes.
resource "azurerm_network_security_rule" "inbound" {
  for_each = local.nsg_rules

  name                        = each.value.name
  priority                    = each.value.priority
  direction                   = "Inbound"
  access                      = each.value.access
  protocol                    = each.value.protocol
  source_port_range           = "*"
  destination_port_ranges     = each.value.destination_port_ranges
  source_address_prefix       = length(each.value.source_address_prefixes) == 1 ? each.value.source_address_prefixes[0] : null
  source_address_prefixes     = length(each.value.source_address_prefixes) == 1 ? null : each.value.source_address_prefixes
  destination_address_prefix  = "VirtualNetwork"
  resource_group_name         = azurerm_resource_group.network.name
  network_security_group_name = azurerm_network_security_group.this[each.value.subnet].name
}

resource "azurerm_subnet_network_security_group_association" "this" {
  for_each = var.subnets

  subnet_id                 = azurerm_subnet.this[each.key].id
  network_security_group_id = azurerm_network_security_group.this[each.key].id
}
