terraform {
  required_version = ">= 1.5.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.0"
    }
  }

  # State: MasterChief runs `terraform init` in the job's work directory.  For
  # shared state, configure a backend here, e.g.
  #   backend "azurerm" {
  #     resource_group_name  = "rg-tfstate"
  #     storage_account_name = "sttfstateexample"
  #     container_name       = "tfstate"
  #     key                  = "azure-aks.tfstate"
  #     use_azuread_auth     = true
  #   }
  # (one state per workspace: the workspace is the MasterChief environment).
}

# Credentials come from the environment MasterChief runs in: ARM_CLIENT_ID /
# ARM_TENANT_ID with ARM_CLIENT_SECRET or a federated token, or a managed
# identity (ARM_USE_MSI=true).  They never appear in variables or state.
provider "azurerm" {
  features {}
  subscription_id = var.subscription_id
}
