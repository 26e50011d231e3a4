output "resource_group_name" {
  description = "Resource group holding the network."
  value       = azurerm_resource_group.network.name
}

output "location" {
  description = "Azure region of the network."
  value       = azurerm_resource_group.network.location
}

output "vnet_id" {
  description = "ID of the virtual network."
  value       = azurerm_virtual_network.main.id
}

output "vnet_name" {
  description = "Name of the virtual network."
  value       = azurerm_virtual_network.main.name
}

output "subnet_ids" {
  description = "Subnet IDs by subnet key (aks, app, management, ...)."
  value       = { for name, subnet in azurerm_subnet.this : name => subnet.id }
}

output "subnet_names" {
  description = "Subnet names by subnet key."
  value       = { for name, subnet in azurerm_subnet.this : name => subnet.name }
}

output "network_security_group_ids" {
  description = "Network security group IDs by subnet key."
  value       = { for name, nsg in azurerm_network_security_group.this : name => nsg.id }
}
