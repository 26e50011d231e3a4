"""Ansible plugins shipped with MasterChief (``ANSIBLE_CALLBACK_PLUGINS`` points here).

Loaded by ansible-playbook in the job's process, never imported by the bot.
"""
