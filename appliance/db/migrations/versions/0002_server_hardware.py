"""server hardware, task data

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('server_hardware',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('driver', sa.String(length=32), nullable=False),
    sa.Column('address', sa.String(length=255), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=128), nullable=False),
    sa.Column('password_sealed', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('state_reason', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('power_state', sa.String(length=16), nullable=False),
    sa.Column('expected_power', sa.String(length=16), nullable=True),
    sa.Column('manufacturer', sa.String(length=255), nullable=True),
    sa.Column('model', sa.String(length=255), nullable=True),
    sa.Column('serial_number', sa.String(length=255), nullable=True),
    sa.Column('part_number', sa.String(length=255), nullable=True),
    sa.Column('uuid', sa.String(length=64), nullable=True),
    sa.Column('rom_version', sa.String(length=255), nullable=True),
    sa.Column('bmc_firmware', sa.String(length=255), nullable=True),
    sa.Column('mac_addresses', sa.JSON(), nullable=False),
    sa.Column('sensors', sa.JSON(), nullable=False),
    sa.Column('boot_device', sa.JSON(), nullable=True),
    sa.Column('last_contact', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('modified', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_server_hardware')),
    sa.UniqueConstraint('address', 'port', name='uq_server_hardware_bmc'),
    sa.UniqueConstraint('name', name=op.f('uq_server_hardware_name'))
    )
    with op.batch_alter_table('server_hardware', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_server_hardware_address'), ['address'], unique=False)
        batch_op.create_index(batch_op.f('ix_server_hardware_serial_number'), ['serial_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_server_hardware_state'), ['state'], unique=False)

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        # Existing rows get an empty object; new rows are filled by the model's default.
        batch_op.add_column(sa.Column('data', sa.JSON(), nullable=False, server_default='{}'))



def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('data')

    with op.batch_alter_table('server_hardware', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_server_hardware_state'))
        batch_op.drop_index(batch_op.f('ix_server_hardware_serial_number'))
        batch_op.drop_index(batch_op.f('ix_server_hardware_address'))

    op.drop_table('server_hardware')
