"""threestudio components. Importing a component's module registers it with threestudio:
``lmcsds.adapter.guidance`` registers ``lmc-sds-deep-floyd-guidance``. ``cpu_mode`` imports
no threestudio at module level, so it can prepare threestudio's imports on a CPU."""
