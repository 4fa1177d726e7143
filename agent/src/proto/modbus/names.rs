//! Names from the specification and Zeek's conventions (`consts.zeek`), so that our events
//! line up with `modbus.log` column for column.

/// Zeek's name for a function code (without the exception bit), if it has one.
pub fn function_name(func: u8) -> Option<&'static str> {
    Some(match func {
        0x01 => "READ_COILS",
        0x02 => "READ_DISCRETE_INPUTS",
        0x03 => "READ_HOLDING_REGISTERS",
        0x04 => "READ_INPUT_REGISTERS",
        0x05 => "WRITE_SINGLE_COIL",
        0x06 => "WRITE_SINGLE_REGISTER",
        0x07 => "READ_EXCEPTION_STATUS",
        0x08 => "DIAGNOSTICS",
        0x09 => "PROGRAM_484",
        0x0A => "POLL_484",
        0x0B => "GET_COMM_EVENT_COUNTER",
        0x0C => "GET_COMM_EVENT_LOG",
        0x0D => "PROGRAM_584_984",
        0x0E => "POLL_584_984",
        0x0F => "WRITE_MULTIPLE_COILS",
        0x10 => "WRITE_MULTIPLE_REGISTERS",
        0x11 => "REPORT_SLAVE_ID",
        0x12 => "PROGRAM_884_U84",
        0x13 => "RESET_COMM_LINK_884_U84",
        0x14 => "READ_FILE_RECORD",
        0x15 => "WRITE_FILE_RECORD",
        0x16 => "MASK_WRITE_REGISTER",
        0x17 => "READ_WRITE_MULTIPLE_REGISTERS",
        0x18 => "READ_FIFO_QUEUE",
        0x28 => "PROGRAM_CONCEPT",
        0x29 => "MULTIPLE_FUNCTION_CODES",
        0x2B => "ENCAP_INTERFACE_TRANSPORT",
        0x5A => "PROGRAM_UNITY",
        0x5B => "OBJECT_MESSAGING",
        0x7D => "FIRMWARE_REPLACEMENT",
        0x7E => "PROGRAM_584_984_2",
        0x7F => "REPORT_LOCAL_ADDRESS",
        _ => return None,
    })
}

/// Whether the function is defined by the public Modbus Application Protocol Specification
/// V1.1b3 (the codes this decoder reads field by field).
pub fn is_public_function(func: u8) -> bool {
    matches!(func, 1..=8 | 11 | 12 | 15 | 16 | 17 | 20..=24 | 43)
}

/// Whether the code sits in a range the specification leaves to users (65–72, 100–110).
pub fn is_user_defined_function(func: u8) -> bool {
    matches!(func, 65..=72 | 100..=110)
}

/// Functions that change device state, program or firmware: what an allowlist weighs most.
pub fn is_write_function(func: u8) -> bool {
    matches!(func, 5 | 6 | 15 | 16 | 21 | 22 | 23)
}

/// Zeek's name for an exception code.
pub fn exception_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x01 => "ILLEGAL_FUNCTION",
        0x02 => "ILLEGAL_DATA_ADDRESS",
        0x03 => "ILLEGAL_DATA_VALUE",
        0x04 => "SLAVE_DEVICE_FAILURE",
        0x05 => "ACKNOWLEDGE",
        0x06 => "SLAVE_DEVICE_BUSY",
        0x08 => "MEMORY_PARITY_ERROR",
        0x0A => "GATEWAY_PATH_UNAVAILABLE",
        0x0B => "GATEWAY_TARGET_DEVICE_FAILED_TO_RESPOND",
        _ => return None,
    })
}

/// The specification's name for a Diagnostics (8) sub-function.
pub fn diagnostics_sub_function_name(sub: u16) -> Option<&'static str> {
    Some(match sub {
        0x00 => "RETURN_QUERY_DATA",
        0x01 => "RESTART_COMMUNICATIONS_OPTION",
        0x02 => "RETURN_DIAGNOSTIC_REGISTER",
        0x03 => "CHANGE_ASCII_INPUT_DELIMITER",
        0x04 => "FORCE_LISTEN_ONLY_MODE",
        0x0A => "CLEAR_COUNTERS_AND_DIAGNOSTIC_REGISTER",
        0x0B => "RETURN_BUS_MESSAGE_COUNT",
        0x0C => "RETURN_BUS_COMMUNICATION_ERROR_COUNT",
        0x0D => "RETURN_BUS_EXCEPTION_ERROR_COUNT",
        0x0E => "RETURN_SERVER_MESSAGE_COUNT",
        0x0F => "RETURN_SERVER_NO_RESPONSE_COUNT",
        0x10 => "RETURN_SERVER_NAK_COUNT",
        0x11 => "RETURN_SERVER_BUSY_COUNT",
        0x12 => "RETURN_BUS_CHARACTER_OVERRUN_COUNT",
        0x14 => "CLEAR_OVERRUN_COUNTER_AND_FLAG",
        _ => return None,
    })
}

/// The specification's name for a basic/regular device-identification object (0x00–0x06).
pub fn device_id_object_name(id: u8) -> Option<&'static str> {
    Some(match id {
        0x00 => "VendorName",
        0x01 => "ProductCode",
        0x02 => "MajorMinorRevision",
        0x03 => "VendorUrl",
        0x04 => "ProductName",
        0x05 => "ModelName",
        0x06 => "UserApplicationName",
        _ => return None,
    })
}
