//! The one place a config column type meets Arrow: the Arrow type of its typed
//! values (what the cleaned Delta table holds and load-stage COPYs), and which
//! Arrow types a source column may have to feed it. PostgreSQL's spelling of the
//! same type is [`ColumnType::sql_type`], beside the type itself.

use datafusion::arrow::datatypes::{DataType, TimeUnit};

use crate::config::ColumnType;

impl ColumnType {
    /// The Arrow type of the column's typed values.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Int => DataType::Int64,
            ColumnType::Float => DataType::Float64,
            ColumnType::Decimal { precision, scale } => {
                DataType::Decimal128(precision, scale as i8)
            }
            ColumnType::String => DataType::Utf8,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }

    /// Whether a source column (Parquet) of type `actual` holds this column's
    /// values as they are, so they are read natively (cast to [`Self::arrow_type`])
    /// rather than formatted as text and parsed back. Only types whose cast can
    /// neither fail nor round: strings, decimals, booleans, zoned timestamps and
    /// unsigned 64-bit integers go through text and its checks.
    pub fn native(self, actual: &DataType) -> bool {
        use DataType as D;
        match self {
            ColumnType::Int => matches!(
                actual,
                D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32
            ),
            // Not Float32: widened, 0.1 would become 0.10000000149011612; its
            // shortest text reads back as the 0.1 the writer meant.
            ColumnType::Float => matches!(actual, D::Float64),
            ColumnType::Date => matches!(actual, D::Date32),
            ColumnType::Timestamp => matches!(actual, D::Timestamp(_, None)),
            ColumnType::String | ColumnType::Decimal { .. } | ColumnType::Bool => false,
        }
    }

    /// Whether a source column (Parquet) of type `actual` can feed this column.
    pub fn accepts(self, actual: &DataType) -> bool {
        use DataType as D;
        let actual = match actual {
            D::Dictionary(_, value) => value.as_ref(),
            other => other,
        };
        let text = matches!(actual, D::Utf8 | D::LargeUtf8 | D::Utf8View);
        let int = actual.is_integer();
        let numeric = actual.is_numeric();
        let temporal = matches!(actual, D::Date32 | D::Date64 | D::Timestamp(_, _));
        match self {
            ColumnType::Int => {
                text || int || matches!(actual, D::Decimal128(_, 0) | D::Decimal256(_, 0))
            }
            ColumnType::Float | ColumnType::Decimal { .. } => text || numeric,
            ColumnType::String => text || numeric || temporal || matches!(actual, D::Boolean),
            ColumnType::Bool => text || int || matches!(actual, D::Boolean),
            ColumnType::Date | ColumnType::Timestamp => text || temporal,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::Field;

    use super::*;

    const ALL: [ColumnType; 7] = [
        ColumnType::Int,
        ColumnType::Float,
        ColumnType::Decimal {
            precision: 12,
            scale: 2,
        },
        ColumnType::String,
        ColumnType::Bool,
        ColumnType::Date,
        ColumnType::Timestamp,
    ];

    #[test]
    fn arrow_type_agrees_with_how_the_stage_table_reads_back() {
        // The stage table's SQL type, read back by the transform reader, must be
        // the Arrow type validate writes: two independent mappings, one answer.
        for ty in ALL {
            assert_eq!(
                crate::pg_table::arrow_type(&ty.sql_type()),
                ty.arrow_type(),
                "{ty}"
            );
        }
    }

    #[test]
    fn each_type_accepts_its_own_arrow_type() {
        for ty in ALL {
            assert!(ty.accepts(&ty.arrow_type()), "{ty}");
            assert!(ty.accepts(&DataType::Utf8), "{ty}");
        }
    }

    #[test]
    fn native_types_are_exact_and_a_subset_of_the_accepted() {
        use DataType as D;
        let zoned = D::Timestamp(TimeUnit::Millisecond, Some("+02:00".into()));
        let candidates = [
            D::Int8,
            D::Int32,
            D::Int64,
            D::UInt32,
            D::UInt64,
            D::Float32,
            D::Float64,
            D::Utf8,
            D::Boolean,
            D::Date32,
            D::Date64,
            D::Decimal128(12, 2),
            D::Timestamp(TimeUnit::Nanosecond, None),
            zoned.clone(),
        ];
        for ty in ALL {
            for actual in &candidates {
                assert!(!ty.native(actual) || ty.accepts(actual), "{ty} {actual}");
            }
        }
        assert!(ColumnType::Int.native(&D::UInt32));
        assert!(ColumnType::Timestamp.native(&D::Timestamp(TimeUnit::Nanosecond, None)));
        // Casts that could fail, round or shift go through text and its checks.
        assert!(!ColumnType::Int.native(&D::UInt64));
        assert!(!ColumnType::Float.native(&D::Float32));
        assert!(!ColumnType::Timestamp.native(&zoned));
        assert!(!ColumnType::Date.native(&D::Date64));
        assert!(!ColumnType::Int.native(&D::Utf8));
    }

    #[test]
    fn source_types_that_can_feed_declared_columns() {
        assert!(ColumnType::Int.accepts(&DataType::Int32));
        assert!(!ColumnType::Int.accepts(&DataType::Float64));
        assert!(!ColumnType::Date.accepts(&DataType::Int64));
        assert!(ColumnType::String.accepts(&DataType::Dictionary(
            Box::new(DataType::Int32),
            Box::new(DataType::Utf8)
        )));
        assert!(
            !ColumnType::String.accepts(&DataType::List(Arc::new(Field::new(
                "x",
                DataType::Utf8,
                true
            ))))
        );
    }
}
