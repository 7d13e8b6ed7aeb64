//! defmt logging that compiles to nothing without the `defmt` feature (the arguments are still
//! evaluated by reference, so no "unused" warnings appear either way).

macro_rules! log {
    ($level:ident, $fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        defmt::$level!($fmt $(, $arg)*);
        #[cfg(not(feature = "defmt"))]
        {
            $(let _ = &$arg;)*
        }
    }};
}

macro_rules! log_info {
    ($($t:tt)*) => { $crate::log::log!(info, $($t)*) };
}

macro_rules! log_warn {
    ($($t:tt)*) => { $crate::log::log!(warn, $($t)*) };
}

macro_rules! log_error {
    ($($t:tt)*) => { $crate::log::log!(error, $($t)*) };
}

pub(crate) use {log, log_error, log_info, log_warn};
